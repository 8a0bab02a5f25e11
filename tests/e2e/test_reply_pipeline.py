"""The reply pipeline end to end: real `ai-broker web` and `ai-broker worker` processes against
the Chatwoot and LLM sandboxes, on the embedded SQLite default."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from app.domain.jobs import JobState
from app.domain.personas import failure_apology, fallback_reply, persona_by_slug
from app.domain.webhook_auth import sign
from app.sandbox.chatwoot import encode_webhook_body
from tests.e2e.conftest import DELAY_SCALE
from tests.support.system import FORM_TOKEN, WEBHOOK_SECRET, RunningSystem, wait_until

pytestmark = pytest.mark.e2e


def _jobs(system: RunningSystem, conversation_id: int) -> list:
    store = system.store()
    try:
        return store.list_jobs(conversation_id=conversation_id)
    finally:
        store.close()


def _broker_of(system: RunningSystem, conversation_id: int):
    store = system.store()
    try:
        assignment = store.get_conversation(conversation_id)
        assert assignment is not None
        return persona_by_slug(assignment.broker_id)
    finally:
        store.close()


def test_customer_message_gets_one_reply_in_the_personas_voice_after_the_delay(
    system: RunningSystem,
) -> None:
    conversation_id = system.new_conversation()
    system.chatwoot.customer_message(
        conversation_id, "Hi, can I refinance my HDB loan to a bank loan this year?"
    )
    replies = system.wait_for_replies(conversation_id)
    system.settle()

    assert len(system.broker_messages(conversation_id)) == 1
    persona = _broker_of(system, conversation_id)
    assert replies[0]["content"].endswith(f"— {persona.first_name}")
    assert replies[0]["sender"]["type"] == "agent_bot"
    (job,) = _jobs(system, conversation_id)
    assert job.state is JobState.SENT
    assert job.reply_message_id == replies[0]["id"]
    assert 1.0 * DELAY_SCALE <= job.delay_s <= 6.0 * DELAY_SCALE
    # The reply went out no earlier than the delay (and within the scheduler's 1 s tick of it).
    assert job.finished_at - job.received_at >= job.delay_s
    assert job.finished_at - job.received_at <= job.delay_s + 3.0
    # The model saw the persona's system prompt and the customer's message.
    call = system.llm.calls()[-1]
    assert call["messages"][0]["role"] == "system"
    assert persona.name in call["messages"][0]["content"]
    assert "refinance my HDB loan" in json.dumps(call["messages"][1:])


def test_same_webhook_twice_and_an_agent_bot_retry_get_no_second_reply(
    system: RunningSystem,
) -> None:
    conversation_id = system.new_conversation()
    system.chatwoot.customer_message(conversation_id, "What's the lowest fixed rate for a condo?")
    system.wait_for_replies(conversation_id)
    delivery = next(
        d
        for d in system.chatwoot.deliveries()
        if d["event"] == "message_created"
        and d.get("conversation_id") == conversation_id
        and d.get("status") == 200
    )
    body = encode_webhook_body(delivery["payload"])
    for _ in range(2):  # the identical delivery again, then a retry with a fresh signature
        timestamp = str(int(time.time()))
        response = httpx.post(
            f"{system.url}/webhooks/chatwoot",
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-Chatwoot-Delivery": delivery["delivery_id"],
                "X-Chatwoot-Timestamp": timestamp,
                "X-Chatwoot-Signature": "sha256=" + sign(WEBHOOK_SECRET, timestamp, body),
            },
        )
        assert response.status_code == 200
        assert response.json()["status"] == "duplicate"
    system.settle()
    assert len(system.broker_messages(conversation_id)) == 1
    assert len(_jobs(system, conversation_id)) == 1


def test_echo_private_note_and_human_reply_get_no_bot_reply(system: RunningSystem) -> None:
    conversation_id = system.new_conversation()
    system.chatwoot.customer_message(conversation_id, "Is a 30-year tenure possible at 45?")
    system.wait_for_replies(conversation_id)
    system.settle()
    echoes = [
        d
        for d in system.chatwoot.deliveries()
        if d["conversation_id"] == conversation_id
        and d["event"] == "message_created"
        and d["payload"]["message_type"] == "outgoing"
    ]
    assert echoes, "the sandbox echoes the bot's own reply as a webhook"
    assert all(d["status"] == 200 for d in echoes)

    system.chatwoot.private_note(conversation_id, "Customer is price sensitive.")
    system.settle()
    assert len(system.broker_messages(conversation_id)) == 1

    system.chatwoot.agent_reply(conversation_id, "Hi, Priya here - I'll take it from here.")
    system.settle(1.0)
    system.chatwoot.customer_message(conversation_id, "Thanks Priya! What documents do you need?")
    system.settle(3.0 * DELAY_SCALE * 2)
    assert len(system.broker_messages(conversation_id)) == 1
    store = system.store()
    try:
        assignment = store.get_conversation(conversation_id)
        assert assignment is not None and assignment.status.value == "human"
    finally:
        store.close()


def test_request_for_a_human_hands_off_and_the_bot_stays_silent(system: RunningSystem) -> None:
    conversation_id = system.new_conversation()
    system.chatwoot.customer_message(conversation_id, "Can I speak to a real person please?")
    (reply,) = system.wait_for_replies(conversation_id)
    wait_until(
        lambda: system.chatwoot.conversation(conversation_id)["status"] == "open",
        what="conversation opened for humans",
    )
    conversation = system.chatwoot.conversation(conversation_id)
    assert conversation["custom_attributes"]["broker_status"] == "handoff_requested"
    assert conversation["custom_attributes"]["handoff_reason"] == "human_requested"
    notes = [m for m in system.chatwoot.messages(conversation_id) if m["private"]]
    assert len(notes) == 1 and "Human specialist requested" in notes[0]["content"]
    assert "human" in reply["content"].lower()
    (job,) = _jobs(system, conversation_id)
    assert job.state is JobState.HANDED_OFF

    system.chatwoot.customer_message(conversation_id, "Hello? Anyone there?")
    system.settle(6.0 * DELAY_SCALE + 1)
    assert len(system.broker_messages(conversation_id)) == 1


def test_message_in_a_handed_off_conversation_gets_no_reply(system: RunningSystem) -> None:
    conversation_id = system.new_conversation()
    system.chatwoot.assign_human(conversation_id)
    system.settle(0.5)
    system.chatwoot.customer_message(conversation_id, "Any update on my application?")
    system.settle(6.0 * DELAY_SCALE + 1)
    assert system.broker_messages(conversation_id) == []


def test_burst_of_messages_within_the_delay_gets_one_reply(system: RunningSystem) -> None:
    conversation_id = system.new_conversation()
    for text in ("Hi", "I'm buying a 4-room resale HDB", "How much can I borrow on 7k a month?"):
        system.chatwoot.customer_message(conversation_id, text)
    system.wait_for_replies(conversation_id)
    system.settle(6.0 * DELAY_SCALE + 1)
    assert len(system.broker_messages(conversation_id)) == 1
    states = sorted(job.state.value for job in _jobs(system, conversation_id))
    assert states == ["merged", "merged", "sent"]
    prompt = json.dumps(system.llm.calls()[-1]["messages"])
    assert "4-room resale HDB" in prompt and "7k a month" in prompt


def test_lead_form_creates_one_conversation_and_one_greeting_then_reuses_it(
    system: RunningSystem,
) -> None:
    form = {
        "name": "Nur Aisyah",
        "email": "aisyah.e2e@example.com",
        "phone": "+6598765432",
        "loanType": "new_purchase",
        "propertyCategory": "hdb",
        "actualIncomes": [6500, 4200],
        "actualAges": [31, 30],
        "employmentType": "employed",
    }
    headers = {"Authorization": f"Bearer {FORM_TOKEN}"}
    first = httpx.post(f"{system.url}/api/conversations", json=form, headers=headers, timeout=10)
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["reused"] is False and body["greeting"] == "queued"
    conversation_id = body["conversation_id"]
    (greeting,) = system.wait_for_replies(conversation_id)
    assert "Nur" in greeting["content"]

    second = httpx.post(f"{system.url}/api/conversations", json=form, headers=headers, timeout=10)
    assert second.status_code == 201, second.text
    assert second.json()["conversation_id"] == conversation_id
    assert second.json()["reused"] is True and second.json()["greeting"] == "skipped"
    system.settle(2.0)
    contact_conversations = [
        c
        for c in system.chatwoot.conversations()
        if c["meta"]["sender"]["email"] == "aisyah.e2e@example.com"
    ]
    assert len(contact_conversations) == 1
    assert len(system.broker_messages(conversation_id)) == 1

    unauthorized = httpx.post(f"{system.url}/api/conversations", json=form, timeout=10)
    assert unauthorized.status_code == 401


def test_llm_outage_gives_the_personas_fallback_reply(system: RunningSystem) -> None:
    system.llm.faults.set(error_rate=1.0, error_status=500)
    conversation_id = system.new_conversation()
    system.chatwoot.customer_message(conversation_id, "What's TDSR and how does it affect me?")
    (reply,) = system.wait_for_replies(conversation_id)
    persona = _broker_of(system, conversation_id)
    assert reply["content"] == fallback_reply(persona)
    (job,) = _jobs(system, conversation_id)
    assert job.used_fallback and job.fallback_reason == "server_error"
    assert job.state is JobState.SENT


def test_chatwoot_outage_is_retried_and_ends_in_exactly_one_reply(system: RunningSystem) -> None:
    conversation_id = system.new_conversation()
    system.chatwoot.customer_message(conversation_id, "Can I use CPF for the downpayment?")
    # The receiver never calls Chatwoot; the worker's first two attempts meet the outage.
    system.chatwoot.faults.set(fail_next=2, fail_next_status=503)
    replies = system.wait_for_replies(conversation_id, timeout=30)
    system.settle(3.0)
    assert len(system.broker_messages(conversation_id)) == 1
    (job,) = _jobs(system, conversation_id)
    assert job.state is JobState.SENT
    assert job.attempts == 3
    assert job.reply_message_id == replies[0]["id"]
    assert not job.used_fallback


def test_outage_past_the_last_attempt_ends_in_an_apology_and_a_handoff(
    system: RunningSystem,
) -> None:
    conversation_id = system.new_conversation()
    system.chatwoot.customer_message(conversation_id, "How long does a valuation take?")
    # Three failed attempts spend the retries; the fourth call (the apology) fails too and is
    # retried, so the customer still ends with an apology and a human.
    system.chatwoot.faults.set(fail_next=4, fail_next_status=500)
    (apology,) = system.wait_for_replies(conversation_id, timeout=40)
    wait_until(
        lambda: system.chatwoot.conversation(conversation_id)["status"] == "open",
        timeout=20,
        what="handoff after the apology",
    )
    persona = _broker_of(system, conversation_id)
    assert apology["content"] == failure_apology(persona)
    (job,) = _jobs(system, conversation_id)
    assert job.state is JobState.FAILED and job.attempts == 4
    assert job.reply_message_id == apology["id"]
    attributes = system.chatwoot.conversation(conversation_id)["custom_attributes"]
    assert attributes["handoff_reason"] == "ai_failure"


def test_bad_signature_is_refused_and_nothing_is_recorded(system: RunningSystem) -> None:
    conversation_id = system.new_conversation()
    message = system.chatwoot.customer_message(conversation_id, "placeholder")
    system.settle(6.0 * DELAY_SCALE + 1)
    before = len(_jobs(system, conversation_id))
    payload = next(
        d["payload"]
        for d in system.chatwoot.deliveries()
        if d["message_id"] == message["id"] and d["event"] == "message_created"
    )
    forged = dict(payload, id=message["id"] + 10_000_000)
    body = encode_webhook_body(forged)
    timestamp = str(int(time.time()))
    for signature in ("sha256=" + sign("wrong-secret", timestamp, body), "", "sha256=00"):
        response = httpx.post(
            f"{system.url}/webhooks/chatwoot",
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-Chatwoot-Timestamp": timestamp,
                "X-Chatwoot-Signature": signature,
            },
        )
        assert response.status_code == 401
        assert response.json()["error"] == "unauthorized"
    stale = str(int(time.time()) - 301)
    response = httpx.post(
        f"{system.url}/webhooks/chatwoot",
        content=body,
        headers={
            "Content-Type": "application/json",
            "X-Chatwoot-Timestamp": stale,
            "X-Chatwoot-Signature": "sha256=" + sign(WEBHOOK_SECRET, stale, body),
        },
    )
    assert response.status_code == 401
    system.settle(1.0)
    assert len(_jobs(system, conversation_id)) == before
