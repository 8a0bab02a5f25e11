"""n8n takes every message and posts nothing (the reference workflow with its Chatwoot node
disabled): the watchdog answers each silent message once, through the new pipeline."""

from __future__ import annotations

import httpx
import pytest

from tests.support.migration import MigrationSystem
from tests.support.real_n8n import SILENT_PATH, RealN8n
from tests.support.system import wait_until

pytestmark = pytest.mark.real_n8n

REPLY_TIMEOUT_S = 5


WEBHOOK_PATH = SILENT_PATH
SYSTEM_ENV = {"N8N_REPLY_TIMEOUT_S": str(REPLY_TIMEOUT_S)}


def test_the_watchdog_answers_every_message_the_silent_workflow_took(
    system: MigrationSystem, n8n: RealN8n
) -> None:
    executions_before = len(n8n.execution_data())
    conversations = [system.new_conversation() for _ in range(4)]
    system.send_each(conversations, "Hello, what documents do I need for a loan?")
    # n8n did take them: each ran the workflow (and posted nothing).
    wait_until(
        lambda: len(n8n.execution_data()) >= executions_before + len(conversations),
        timeout=20,
        what="n8n executions",
    )
    system.wait_all_answered(conversations, timeout=REPLY_TIMEOUT_S + 30)
    system.settle(REPLY_TIMEOUT_S + 1.0)
    for conversation_id in conversations:
        assert system.answers(conversation_id) == {"new": 1, "n8n": 0, "human": 0}
    store = system.store()
    try:
        jobs = [job for c in conversations for job in store.list_jobs(conversation_id=c)]
    finally:
        store.close()
    assert [job.route_reason for job in jobs] == ["n8n_silent"] * len(conversations)
    assert all(job.reply_message_id is not None for job in jobs)
    metrics = httpx.get(f"{system.url}/metrics", timeout=10).text
    assert f"ai_broker_n8n_silent_total {len(conversations)}" in metrics
