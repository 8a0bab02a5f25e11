"""The migration against the real n8n (tests/support/real_n8n.py) running the reference workflow:
`ai-broker web` (two receiver processes) and `ai-broker worker` forward n8n's share to it, and it
posts its replies into the Chatwoot sandbox as n8n's user, as the legacy workflow does."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest

from app.domain.rollout import bucket
from app.domain.webhook_auth import WebhookAuth
from app.sandbox.llm import LLMSandbox
from tests.support.migration import MigrationSystem
from tests.support.real_n8n import N8N_VERSION, REFERENCE_PATH, STARTED, RealN8n
from tests.support.system import WEBHOOK_SECRET, wait_until

pytestmark = pytest.mark.real_n8n


WEBHOOK_PATH = REFERENCE_PATH
# Probes every 2 s while n8n restarts, so that some meet its start-up window.
# N8N_TIMEOUT_S as in production (3 s), not the sandbox tests' 2 s: the real n8n on this 2-core
# machine sometimes takes over 2 s to acknowledge a webhook, and a forward that times out is
# ambiguous (n8n may still answer it while the new pipeline, with no human-like delay here,
# already has): a known gap, see docs/migration.md, Limits worth knowing.
SYSTEM_ENV = {"N8N_CIRCUIT_COOLDOWN_S": "2", "N8N_TIMEOUT_S": "3"}


@pytest.fixture(autouse=True)
def _reset(system: MigrationSystem, llm: LLMSandbox) -> Iterator[None]:
    yield
    llm.configure(latency_ms=0)
    system.set_rollout(percentage=0, shadow=False)


def test_half_each_way_with_shadow_compares_n8ns_actual_reply(
    system: MigrationSystem, report: Callable[[str], None]
) -> None:
    system.set_rollout(percentage=50, shadow=True)
    conversations = [system.new_conversation() for _ in range(40)]
    system.send_each(conversations, "What are today's fixed rates for a condo?")
    system.wait_all_answered(conversations)
    system.settle(2.0)

    for conversation_id in conversations:
        by = "new" if bucket(conversation_id) <= 50 else "n8n"
        assert system.answers(conversation_id) == {"new": 0, "n8n": 0, "human": 0} | {by: 1}
    n8n_side = [c for c in conversations if bucket(c) > 50]
    assert 8 <= len(n8n_side) <= 32, "a 50 % split of 40 conversations"

    store = system.store()
    try:

        def paired() -> list[Any]:
            rows = [c for c in store.list_comparisons(limit=500) if c.conversation_id in n8n_side]
            return rows if all(r.n8n_reply and r.shadow_reply for r in rows) else []

        rows = wait_until(paired, timeout=30, what="a complete comparison per n8n conversation")
    finally:
        store.close()
    assert sorted(r.conversation_id for r in rows) == sorted(n8n_side)
    for row in rows:
        posted = [m["content"] for m in system.public_replies(row.conversation_id)]
        assert row.n8n_reply == posted[0]  # what n8n posted to the customer
        assert row.n8n_reply != STARTED["message"]
        assert row.n8n_source == "message_event"
    n8n_ms = [_reply_latency_ms(system, c) for c in n8n_side]
    new_ms = [_reply_latency_ms(system, c) for c in conversations if c not in n8n_side]
    report(
        f"reply latency, message to reply: n8n {N8N_VERSION} "
        f"p50 {_p(n8n_ms, 50):.0f} ms p99 {_p(n8n_ms, 99):.0f} ms ({len(n8n_ms)}) · "
        f"new pipeline p50 {_p(new_ms, 50):.0f} ms p99 {_p(new_ms, 99):.0f} ms ({len(new_ms)})"
    )


def test_a_human_agent_in_an_n8n_conversation_takes_it_over(system: MigrationSystem) -> None:
    conversation_id = system.new_conversation()
    system.chatwoot.customer_message(conversation_id, "Can I refinance my HDB flat?")
    system.wait_all_answered([conversation_id])
    assert system.answers(conversation_id) == {"new": 0, "n8n": 1, "human": 0}

    system.chatwoot.agent_reply(conversation_id, "Hi, this is Rachel from NextNest. Let me help.")
    store = system.store()
    try:
        wait_until(
            lambda: (c := store.get_conversation(conversation_id)) and c.status.value == "human",
            timeout=20,
            what="the conversation marked human",
        )
        system.chatwoot.customer_message(conversation_id, "Great, thank you Rachel!")
        system.settle(3.0)
        # Neither system answers a conversation a human has taken.
        assert system.answers(conversation_id) == {"new": 0, "n8n": 1, "human": 1}
        assert store.list_jobs(conversation_id=conversation_id)[0].route == "n8n"
    finally:
        store.close()


def test_rollback_mid_traffic_answers_every_message_once_and_reforwards_chatwoots_headers(
    system: MigrationSystem, llm: LLMSandbox, n8n: RealN8n
) -> None:
    system.set_rollout(percentage=50)
    llm.configure(latency_ms=800)  # replies in flight when the rollback comes
    conversations = [system.new_conversation() for _ in range(120)]
    rollback: dict[str, Any] = {}
    for index, conversation_id in enumerate(conversations):
        system.chatwoot.customer_message(conversation_id, "Can I refinance my condo this year?")
        if index == 60:
            response = system.admin("POST", "rollback", {"reason": "real n8n rollback"})
            assert response.status_code == 200, response.text
            rollback = response.json()["rollback"]
        time.sleep(0.01)
    system.wait_all_answered(conversations, timeout=120)
    system.settle(3.0)
    counts = [sum(system.answers(c).values()) for c in conversations]
    assert counts.count(1) == len(conversations), f"answers per message: {sorted(set(counts))}"
    assert rollback["forwarded_to_n8n"] >= 1, rollback
    assert (
        rollback["cancelled"] == rollback["forwarded_to_n8n"] + rollback["answered_by_new_pipeline"]
    )

    store = system.store()
    try:
        jobs = [job for c in conversations for job in store.list_jobs(conversation_id=c)]
    finally:
        store.close()
    reforwarded = [job for job in jobs if job.route_reason == "rollback"]
    assert len(reforwarded) == rollback["forwarded_to_n8n"]
    received = "\n".join(n8n.execution_data())
    auth = WebhookAuth(secret=WEBHOOK_SECRET, token=None)
    for job in reforwarded:
        assert system.answers(job.conversation_id) == {"new": 0, "n8n": 1, "human": 0}
        headers = {name.lower(): value for name, value in (job.inbound_headers or {}).items()}
        assert job.inbound_payload is not None
        # The headers kept with the job are Chatwoot's own: they sign the body it sent...
        assert (
            auth.rejection(
                body=job.inbound_payload.encode(),
                timestamp=headers.get("x-chatwoot-timestamp"),
                signature=headers.get("x-chatwoot-signature"),
                url_token=None,
                now=time.time(),
            )
            is None
        )
        # ...and n8n received them with the re-forwarded message.
        assert headers["x-chatwoot-signature"] in received
        assert headers["x-chatwoot-delivery"] in received

    rolled_back = [c for c in conversations if bucket(c) <= 50]
    system.send_each(rolled_back, "And what about a 3-year lock-in?")
    system.wait_all_answered(rolled_back, count=2, timeout=120)
    system.settle(3.0)
    for conversation_id in rolled_back:
        answers = system.answers(conversation_id)
        assert sum(answers.values()) == 2 and answers["human"] == 0, (conversation_id, answers)


def test_n8n_killed_then_restarted_loses_no_message(
    system: MigrationSystem, n8n: RealN8n, report: Callable[[str], None]
) -> None:
    n8n.kill()
    try:
        down = [system.new_conversation() for _ in range(8)]
        system.send_each(down[:5], "Hi, is anyone there?")
        wait_until(lambda: system.circuit() == "open", timeout=30, what="n8n's circuit open")
        system.send_each(down[5:], "Hi, is anyone there?")
        system.wait_all_answered(down, timeout=60)
        for conversation_id in down:
            assert system.answers(conversation_id) == {"new": 1, "n8n": 0, "human": 0}

        # Customers keep writing while n8n boots: refused connections, then its 404s until the
        # workflow is registered; the circuit half-opens every cooldown and probes it.
        started = n8n.start()
        during_start: list[int] = []
        while time.monotonic() - started < 60:
            conversation_id = system.new_conversation()
            system.chatwoot.customer_message(conversation_id, "Hello? Anyone?")
            during_start.append(conversation_id)
            time.sleep(0.3)
            if len(during_start) % 5 == 0 and system.circuit() == "closed":
                break
        n8n.wait_ready(REFERENCE_PATH)
        wait_until(lambda: system.circuit() == "closed", timeout=60, what="n8n's circuit closed")
        report(
            f"n8n restart: circuit closed {time.monotonic() - started:.1f} s after the start, "
            f"{len(during_start)} messages sent meanwhile"
        )
    finally:
        if not n8n.running:
            n8n.start()
            n8n.wait_ready(REFERENCE_PATH)
    system.wait_all_answered(during_start, timeout=60)
    system.settle(3.0)
    for conversation_id in during_start:
        answers = system.answers(conversation_id)
        assert sum(answers.values()) == 1 and answers["human"] == 0, (conversation_id, answers)
    # The window was there (n8n answered a forward 404: the workflow not registered yet), and
    # no message was taken in it and left for the watchdog to find: each was answered at once.
    assert "is not registered" in n8n.log_text()
    store = system.store()
    try:
        jobs = [job for c in during_start for job in store.list_jobs(conversation_id=c)]
    finally:
        store.close()
    assert "n8n_silent" not in {job.route_reason for job in jobs}

    after = [system.new_conversation() for _ in range(5)]
    system.send_each(after, "Back to normal?")
    system.wait_all_answered(after)
    for conversation_id in after:
        assert system.answers(conversation_id) == {"new": 0, "n8n": 1, "human": 0}


def _reply_latency_ms(system: MigrationSystem, conversation_id: int) -> float:
    """From the customer's message to the first public reply, both on Chatwoot's clock."""
    messages = system.chatwoot.messages(conversation_id)
    asked = next(m for m in messages if m["message_type"] == 0)
    answered = next(m for m in messages if m["message_type"] == 1 and not m["private"])
    return (_at(answered) - _at(asked)) * 1000


def _at(message: dict[str, Any]) -> float:
    return datetime.fromisoformat(message["updated_at"].replace("Z", "+00:00")).timestamp()


def _p(values: list[float], percentile: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[percentile - 1]
