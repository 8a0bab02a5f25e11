"""The n8n sandbox plays the legacy workflow: it answers customer messages into Chatwoot."""

from __future__ import annotations

import socket
import time

import httpx

from app.sandbox.chatwoot import ChatwootSandbox
from app.sandbox.control import N8nSandboxControl
from app.sandbox.n8n import SENDER, WEBHOOK_PATH, WORKFLOW_STARTED, N8nSandbox
from tests.support.system import wait_until


def test_chatwoot_webhook_gets_an_n8n_reply_posted_into_the_conversation(
    chatwoot: ChatwootSandbox, n8n: N8nSandbox
) -> None:
    chatwoot.add_webhook(f"{n8n.url}{WEBHOOK_PATH}", secret=None, kind="account")
    _, conversation = chatwoot.create_lead_conversation(
        "Tan Wei Ming", "t@example.com", "+6591234567"
    )
    chatwoot.customer_message(conversation["id"], "Can I refinance my HDB loan?")
    # The workflow posts after acknowledging the webhook; its reply comes back as an event too.
    wait_until(lambda: len(chatwoot.messages(conversation["id"])) == 2, timeout=5)
    n8n.drain()
    assert chatwoot.wait_for_deliveries(5)
    reply = chatwoot.messages(conversation["id"])[-1]
    assert reply["message_type"] == 1 and reply["sender_type"] == "User"
    assert reply["content_attributes"] == {"n8n": True}
    assert reply["content"].startswith("Hi Tan, thanks for your message about “Can I refinance")
    # Posted as Chatwoot's automation user: N8N_SENDER.
    assert f"user:{reply['sender']['id']}" == SENDER
    received = n8n.received()
    handled = [r for r in received if r["handled"]]
    assert len(handled) == 1 and handled[0]["post_status"] == 200
    # Its own reply came back as an outgoing message_created and was ignored, like the workflow.
    assert any(r["message_type"] == "outgoing" and not r["handled"] for r in received)


def test_the_webhook_answers_at_once_and_the_reply_follows(
    chatwoot: ChatwootSandbox, n8n: N8nSandbox
) -> None:
    """As the legacy workflow's webhook node ("Respond: Immediately"): the answer is only the
    acknowledgement; the reply is posted to Chatwoot after the workflow's delay."""
    _, conversation = chatwoot.create_lead_conversation("A B", "a@example.com", "+6580000008")
    payload = incoming_payload(chatwoot, conversation["id"], "Hello there")
    n8n.configure(reply_delay_ms=300)
    started = time.monotonic()
    answered = httpx.post(f"{n8n.url}{WEBHOOK_PATH}", json=payload, timeout=5)
    assert time.monotonic() - started < 0.3
    assert answered.status_code == 200 and answered.json() == WORKFLOW_STARTED
    assert n8n.received()[-1]["handled"] is False  # still running
    n8n.drain()
    assert n8n.received()[-1]["handled"] is True
    assert chatwoot.messages(conversation["id"])[-1]["content"].startswith("Hi A, thanks")


def test_response_modes_start_up_unregistered_and_silent(
    chatwoot: ChatwootSandbox, n8n: N8nSandbox
) -> None:
    _, conversation = chatwoot.create_lead_conversation("A B", "a@example.com", "+6580000009")
    payload = incoming_payload(chatwoot, conversation["id"], "Hello there")
    url = f"{n8n.url}{WEBHOOK_PATH}"
    with N8nSandboxControl(n8n.url) as control:
        control.configure(reply_delay_ms=150, respond="when_done")
        started = time.monotonic()
        answered = httpx.post(url, json=payload, timeout=5)
        assert time.monotonic() - started >= 0.15
        assert answered.status_code == 200
        assert answered.json()["reply"].startswith("Hi A, thanks for your message about “Hello")
        ignored = httpx.post(url, json={"event": "conversation_updated", "id": 1})
        assert ignored.json() == {"status": "ok"} and len(control.received()) == 2

        control.configure(state="starting")
        starting = httpx.post(url, json=payload)
        assert starting.status_code == 200 and "n8n is starting up" in starting.text
        control.configure(state="unregistered")
        assert httpx.post(url, json=payload).status_code == 404
        assert len(control.received()) == 2  # neither reached the workflow

        control.configure(state="running", respond="immediately", post_replies=False)
        before = len(chatwoot.messages(conversation["id"]))
        assert httpx.post(url, json=payload).json() == WORKFLOW_STARTED
        n8n.drain()
        assert control.received()[-1]["error"] == "Chatwoot node disabled"
        assert len(chatwoot.messages(conversation["id"])) == before  # silent

        control.set_faults(fail_next=1, fail_next_status=502)
        assert httpx.post(url, json=payload).status_code == 502
        assert len(control.received()) == 3  # the faulted request never reached the workflow
        control.reset()
        assert control.received() == [] and control.config()["respond"] == "immediately"


def test_a_failing_chatwoot_makes_the_workflow_fail(
    chatwoot: ChatwootSandbox, n8n: N8nSandbox
) -> None:
    _, conversation = chatwoot.create_lead_conversation("A B", "a@example.com", "+6580000010")
    payload = incoming_payload(chatwoot, conversation["id"], "Anyone there?")
    n8n.configure(respond="when_done")
    chatwoot.faults.set(fail_next=1)
    failed = httpx.post(f"{n8n.url}{WEBHOOK_PATH}", json=payload)
    assert failed.status_code == 500
    assert n8n.received()[-1]["post_status"] == 500


def incoming_payload(chatwoot: ChatwootSandbox, conversation_id: int, content: str) -> dict:
    """A real message_created body, read from the sandbox's delivery records.

    The webhook points at a port nobody listens on: the attempt fails, but its body is recorded.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    chatwoot.add_webhook(
        f"http://127.0.0.1:{closed_port}/",
        secret=None,
        kind="account",
        subscriptions=["message_created"],
    )
    chatwoot.customer_message(conversation_id, content)
    assert chatwoot.wait_for_deliveries(5)
    return next(d["payload"] for d in chatwoot.deliveries() if d["payload"]["content"] == content)
