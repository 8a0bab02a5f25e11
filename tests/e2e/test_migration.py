"""Migration control end to end: real `ai-broker web` and `ai-broker worker` processes with the
Chatwoot, LLM, n8n and Slack sandboxes (n8n posting its replies into the Chatwoot sandbox)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.domain.rollout import bucket
from app.sandbox.chatwoot import ChatwootSandbox
from app.sandbox.llm import LLMSandbox
from app.sandbox.n8n import N8nSandbox
from tests.support.migration import MigrationSystem, migration_system
from tests.support.system import wait_until

pytestmark = pytest.mark.e2e


class SandboxMigrationSystem(MigrationSystem):
    n8n: N8nSandbox


@contextmanager
def _migration_system(data_dir: Path) -> Iterator[SandboxMigrationSystem]:
    with (
        ChatwootSandbox(webhook_retry_wait_s=0.5) as chatwoot,
        LLMSandbox() as llm,
        N8nSandbox(chatwoot_url=chatwoot.url) as n8n,
        migration_system(
            data_dir,
            chatwoot,
            llm,
            n8n_webhook_url=f"{n8n.url}/webhook/chatwoot-ai-broker",
            system_type=SandboxMigrationSystem,
        ) as running,
    ):
        running.n8n = n8n
        yield running


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxMigrationSystem]:
    with _migration_system(tmp_path_factory.mktemp("migration")) as running:
        yield running


@pytest.fixture
def own_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxMigrationSystem]:
    """A system with an empty ledger, for a test the other tests' traffic would hold up: the
    rollback guard judges every reply of the last `window_s` (60 s at least), and the tests
    before it send hundreds of good ones, which hid a failing LLM until they aged out (~50 s)."""
    with _migration_system(tmp_path_factory.mktemp("migration-guard")) as running:
        yield running


@pytest.fixture(autouse=True)
def _reset(system: SandboxMigrationSystem) -> Iterator[None]:
    yield
    for sandbox in (system.chatwoot, system.llm, system.n8n):
        sandbox.faults.reset()
    system.llm.configure(latency_ms=0)
    guard = {"enabled": False, "min_sample": 20, "window_s": 600, "max_fallback_rate": 0.25}
    system.set_rollout(percentage=0, shadow=False, guard=guard)
    wait_until(
        lambda: system.circuit() == "closed" or _close_circuit(system),
        timeout=40,
        what="n8n circuit closed again",
    )


def _close_circuit(system: SandboxMigrationSystem) -> bool:
    """A half-open circuit closes on the next successful forward (a probe)."""
    conversation_id = system.new_conversation()
    system.chatwoot.customer_message(conversation_id, "probe")
    time.sleep(1)
    return False


def test_sticky_routing_at_30_percent_and_raising_to_60_moves_none_back(
    system: SandboxMigrationSystem,
) -> None:
    system.set_rollout(percentage=30)
    conversations = [system.new_conversation() for _ in range(1000)]
    system.send_each(conversations, "Hello, what are today's fixed rates?")
    system.wait_all_answered(conversations, timeout=180)
    system.settle(2.0)

    expected_new = {c for c in conversations if bucket(c) <= 30}
    answered_new = {c for c in conversations if system.answers(c)["new"]}
    assert answered_new == expected_new
    assert 250 <= len(answered_new) <= 350
    assert all(sum(system.answers(c).values()) == 1 for c in conversations)

    sample = conversations[:60]
    system.send_each(sample, "And for a 3-year lock-in?")
    wait_until(
        lambda: all(sum(system.answers(c).values()) >= 2 for c in sample),
        timeout=60,
        what="second answers at 30 %",
    )
    for conversation_id in sample:
        answers = system.answers(conversation_id)
        assert max(answers.values()) == 2, (conversation_id, answers)  # same system both times

    system.set_rollout(percentage=60)
    system.send_each(sample, "Thanks. One more question.")
    wait_until(
        lambda: all(sum(system.answers(c).values()) >= 3 for c in sample),
        timeout=60,
        what="third answers at 60 %",
    )
    for conversation_id in sample:
        answers = system.answers(conversation_id)
        if conversation_id in expected_new:
            assert answers == {"new": 3, "n8n": 0, "human": 0}, (conversation_id, answers)
        elif bucket(conversation_id) <= 60:
            assert answers == {"new": 1, "n8n": 2, "human": 0}, (conversation_id, answers)
        else:
            assert answers == {"new": 0, "n8n": 3, "human": 0}, (conversation_id, answers)


def test_shadow_sends_nothing_and_pairs_both_replies(system: SandboxMigrationSystem) -> None:
    system.set_rollout(percentage=0, shadow=True)
    before = len(system.chatwoot.requests())
    conversations = [system.new_conversation() for _ in range(12)]
    system.send_each(conversations, "Is it better to refinance now or wait?")
    system.wait_all_answered(conversations)
    store = system.store()
    try:
        wait_until(
            lambda: (
                len(
                    [
                        c
                        for c in store.list_comparisons(limit=500)
                        if c.conversation_id in conversations and c.shadow_reply and c.n8n_reply
                    ]
                )
                == 12
            ),
            timeout=60,
            what="12 complete comparisons",
        )
        rows = [c for c in store.list_comparisons(limit=500) if c.conversation_id in conversations]
        assert len(rows) == 12
        assert all(row.similarity is not None and 0 <= row.similarity <= 1 for row in rows)
        assert all(row.n8n_latency_ms is not None for row in rows)
        for conversation_id in conversations:
            assert store.get_conversation(conversation_id) is None  # no assignment
        assert all(b.current_workload == 0 for b in store.list_brokers())
    finally:
        store.close()
    for conversation_id in conversations:
        assert system.answers(conversation_id) == {"new": 0, "n8n": 1, "human": 0}
    writes = [
        r
        for r in system.chatwoot.requests()[before:]
        if r["method"] != "GET" and r.get("token_kind") != "user"
    ]
    assert writes == []  # every write came from n8n's user token, none from the bot


def test_rollback_mid_run_leaves_every_message_with_exactly_one_answer(
    system: SandboxMigrationSystem,
) -> None:
    system.set_rollout(percentage=50)
    system.llm.configure(latency_ms=800)
    conversations = [system.new_conversation() for _ in range(300)]
    rollback_result: dict[str, Any] = {}
    for index, conversation_id in enumerate(conversations):
        system.chatwoot.customer_message(conversation_id, "Can I refinance my condo this year?")
        if index == 150:
            response = system.admin("POST", "rollback", {"reason": "e2e mid-run rollback"})
            assert response.status_code == 200, response.text
            rollback_result = response.json()["rollback"]
        time.sleep(0.01)
    system.wait_all_answered(conversations, timeout=120)
    system.settle(3.0)
    counts = [sum(system.answers(c).values()) for c in conversations]
    assert counts.count(1) == 300, f"answers per message: {sorted(set(counts))}"
    status = system.admin("GET", "migration-status").json()
    assert status["rollout"]["percentage"] == 0
    assert (
        rollback_result["cancelled"]
        == rollback_result["forwarded_to_n8n"] + rollback_result["answered_by_new_pipeline"]
    )
    second = system.admin("POST", "rollback", {"reason": "pressed twice"})
    assert second.status_code == 200 and second.json()["rollback"]["cancelled"] == 0


def test_failing_llm_trips_the_automatic_rollback_and_alerts(
    own_system: SandboxMigrationSystem,
) -> None:
    system = own_system
    guard = {"enabled": True, "min_sample": 10, "window_s": 60, "max_fallback_rate": 0.25}
    system.set_rollout(percentage=100, guard=guard)
    system.llm.faults.set(error_rate=0.5, error_status=500, seed=7)
    alerts_before = len(system.slack.messages())
    conversations = [system.new_conversation() for _ in range(30)]
    system.send_each(conversations, "How much can I borrow?")
    wait_until(
        lambda: system.admin("GET", "migration-status").json()["rollout"]["percentage"] == 0,
        timeout=60,
        what="automatic rollback",
    )
    audit = system.store().audit_log(limit=5)
    automatic = [entry for entry in audit if entry.action == "auto_rollback"]
    assert automatic and automatic[0].automatic and "fallback rate" in automatic[0].reason
    wait_until(lambda: len(system.slack.messages()) > alerts_before, timeout=10, what="alert")
    assert "rolled back" in system.slack.messages()[-1]["text"]
    system.wait_all_answered(conversations)
    assert all(sum(system.answers(c).values()) == 1 for c in conversations)


def test_n8n_down_opens_the_circuit_and_the_new_pipeline_answers(
    system: SandboxMigrationSystem,
) -> None:
    system.set_rollout(percentage=0)
    system.n8n.faults.set(error_rate=1.0, error_status=500)
    conversations = [system.new_conversation() for _ in range(8)]
    # Five failures in a row open the circuit; the next three, sent well within its cooldown,
    # never reach n8n.
    system.send_each(conversations[:5], "Hi, is anyone there?")
    wait_until(
        lambda: (
            system.admin("GET", "migration-status").json()["n8n"]["circuit"]["position"] == "open"
        ),
        timeout=30,
        what="n8n circuit open",
    )
    system.send_each(conversations[5:], "Hi, is anyone there?")
    system.wait_all_answered(conversations)
    for conversation_id in conversations:
        assert system.answers(conversation_id) == {"new": 1, "n8n": 0, "human": 0}
    status = system.admin("GET", "migration-status").json()
    assert status["n8n"]["circuit"]["position"] == "open"
    store = system.store()
    try:
        reasons = [
            job.route_reason for c in conversations for job in store.list_jobs(conversation_id=c)
        ]
    finally:
        store.close()
    assert reasons.count("n8n_failed") == 5
    assert reasons.count("n8n_circuit_open") == 3
    metrics = httpx.get(f"{system.url}/metrics").text
    assert "ai_broker_n8n_circuit_open 1" in metrics
