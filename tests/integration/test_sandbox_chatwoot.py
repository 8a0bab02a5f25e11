"""The Chatwoot sandbox honours the contract: shapes, auth, errors, webhooks, signing, retries."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from app.sandbox.chatwoot import ChatwootSandbox, encode_webhook_body, sign_webhook
from app.sandbox.control import ChatwootSandboxControl
from tests.support.fixtures import CHATWOOT_FIXTURES

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

USER = {"api_access_token": "sandbox-user-token"}
BOT = {"api_access_token": "sandbox-bot-token"}
SECRET = "bot-secret-for-tests"


class WebhookReceiver:
    """A webhook endpoint on a real port: records every request, answers scripted statuses."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.statuses: deque[int] = deque()
        self.delay_s = 0.0
        self._cond = threading.Condition()
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.port}/hook"
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def _app(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        return self._answer(Request(environ))(environ, start_response)

    def _answer(self, request: Request) -> Response:
        time.sleep(self.delay_s)
        with self._cond:
            status = self.statuses.popleft() if self.statuses else 200
            self.received.append(
                {"headers": dict(request.headers), "body": request.get_data(), "status": status}
            )
            self._cond.notify_all()
        return Response("{}", status=status, content_type="application/json")

    def events(self, event: str) -> list[dict[str, Any]]:
        with self._cond:
            payloads = [(r, json.loads(r["body"])) for r in self.received]
        return [r | {"payload": p} for r, p in payloads if p.get("event") == event]

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], *, count: int = 1, timeout: float = 5
    ) -> list[dict[str, Any]]:
        def matching() -> list[dict[str, Any]]:
            out = []
            for r in self.received:
                payload = json.loads(r["body"])
                if predicate(payload):
                    out.append(r | {"payload": payload})
            return out

        with self._cond:
            self._cond.wait_for(lambda: len(matching()) >= count, timeout=timeout)
            return matching()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def fixtures() -> Path:
    return CHATWOOT_FIXTURES


def load(fixtures: Path, name: str) -> Any:
    return json.loads((fixtures / name).read_text())


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver()
    yield r
    r.close()


@pytest.fixture
def chatwoot() -> Iterator[ChatwootSandbox]:
    with ChatwootSandbox(webhook_retry_wait_s=0.05) as sandbox:
        yield sandbox


@pytest.fixture
def api(chatwoot: ChatwootSandbox) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{chatwoot.url}/api/v1/accounts/3", timeout=10) as client:
        yield client


def new_conversation(api: httpx.Client, email: str = "weiming.tan@example.com") -> dict[str, Any]:
    contact = api.post(
        "/contacts",
        headers=USER,
        json={"name": "Tan Wei Ming", "email": email, "phone_number": None, "inbox_id": 7},
    ).json()["payload"]["contact"]
    response = api.post(
        "/conversations",
        headers=USER,
        json={"inbox_id": 7, "contact_id": contact["id"], "custom_attributes": {"lead": "web"}},
    )
    assert response.status_code == 200, response.text
    return response.json()


def keys_of(value: dict[str, Any]) -> set[str]:
    return set(value)


# -- REST shapes -----------------------------------------------------------------------------------


def test_contact_create_and_search_match_the_fixture_shapes(
    api: httpx.Client, fixtures: Path
) -> None:
    created = api.post(
        "/contacts",
        headers=USER,
        json={
            "name": "Tan Wei Ming",
            "email": "WM@example.com",
            "phone_number": "+6591234567",
            "identifier": "crm-1",
            "inbox_id": 7,
        },
    )
    assert created.status_code == 200
    expected = load(fixtures, "api/create_contact.json")["payload"]
    payload = created.json()["payload"]
    assert keys_of(payload["contact"]) == keys_of(expected["contact"])
    assert keys_of(payload["contact_inbox"]["inbox"]) == keys_of(expected["contact_inbox"]["inbox"])
    source_id = payload["contact_inbox"]["source_id"]
    assert len(source_id) == 36 and source_id.count("-") == 4  # a UUID, as for API inboxes
    assert payload["contact"]["contact_inboxes"][0]["source_id"] == source_id

    found = api.get("/contacts/search", params={"q": "wei MING"}, headers=USER)
    assert found.status_code == 200
    search = load(fixtures, "api/search_contacts.json")
    assert found.json()["meta"] == {"count": 1, "current_page": 1, "has_more": False}
    assert keys_of(found.json()["payload"][0]) - {"last_activity_at"} == keys_of(
        search["payload"][0]
    ) - {"last_activity_at"}
    assert (
        api.get("/contacts/search", params={"q": "+65912"}, headers=USER).json()["meta"]["count"]
        == 1
    )


def test_duplicate_contact_and_search_without_q_are_422s(api: httpx.Client) -> None:
    body = {"name": "A", "email": "a@example.com", "phone_number": "+6580000000"}
    assert api.post("/contacts", headers=USER, json=body).status_code == 200
    duplicate = api.post("/contacts", headers=USER, json=body | {"email": "A@EXAMPLE.com"})
    assert duplicate.status_code == 422
    assert duplicate.json() == {
        "message": "Email has already been taken, Phone number has already been taken",
        "attributes": ["email", "phone_number"],
    }
    no_q = api.get("/contacts/search", headers=USER)
    assert no_q.status_code == 422
    assert no_q.json() == {"error": "Specify search string with parameter q"}


def test_conversations_start_pending_with_increasing_display_ids(
    api: httpx.Client, fixtures: Path
) -> None:
    first = new_conversation(api, "one@example.com")
    second = new_conversation(api, "two@example.com")
    expected = load(fixtures, "api/create_conversation.json")
    assert keys_of(first) == keys_of(expected)
    assert keys_of(first["meta"]) == keys_of(expected["meta"])
    assert first["status"] == "pending"
    assert first["id"] >= 1000 and second["id"] == first["id"] + 1
    assert first["custom_attributes"] == {"lead": "web"}
    shown = api.get(f"/conversations/{first['id']}", headers=BOT)  # bots may show (v4.14.2+)
    assert shown.status_code == 200 and shown.json()["id"] == first["id"]
    listed = api.get(f"/contacts/{first['meta']['sender']['id']}/conversations", headers=USER)
    assert [c["id"] for c in listed.json()["payload"]] == [first["id"]]


def test_bot_reply_response_and_echo_webhook_match_the_fixtures(
    chatwoot: ChatwootSandbox, api: httpx.Client, receiver: WebhookReceiver, fixtures: Path
) -> None:
    chatwoot.add_webhook(receiver.url, secret=SECRET, kind="agent_bot")
    conversation = new_conversation(api)
    chatwoot.customer_message(conversation["id"], "Hi, can I refinance my HDB loan?")
    sent = api.post(
        f"/conversations/{conversation['id']}/messages",
        headers=BOT,
        json={
            "content": "Yes you can <b>&</b> here's how",
            "echo_id": "job-1",
            "content_attributes": {"broker_request_id": "job-1"},
        },
    )
    assert sent.status_code == 200
    expected_response = load(fixtures, "api/create_message.json")
    assert keys_of(sent.json()) == keys_of(expected_response)
    assert sent.json()["echo_id"] == "job-1"
    assert sent.json()["message_type"] == 1
    assert sent.json()["sender"] == {
        "id": 12,
        "name": "Mortgage Broker AI",
        "avatar_url": "",
        "type": "agent_bot",
    }

    [echo] = receiver.wait_for(
        lambda p: p.get("event") == "message_created" and p.get("message_type") == "outgoing"
    )
    body, payload = echo["body"], echo["payload"]
    fixture = load(fixtures, "message_created.outgoing_agent_bot_echo.json")
    assert list(payload) == list(fixture)
    assert keys_of(payload["conversation"]) == keys_of(fixture["conversation"])
    assert keys_of(payload["conversation"]["meta"]) == keys_of(fixture["conversation"]["meta"])
    assert keys_of(payload["conversation"]["messages"][0]) == keys_of(
        fixture["conversation"]["messages"][0]
    )
    assert payload["sender"] == {"id": 12, "name": "Mortgage Broker AI", "type": "agent_bot"}
    assert payload["content_attributes"] == {"broker_request_id": "job-1"}
    assert "echo_id" not in body.decode()
    assert isinstance(payload["created_at"], str) and payload["created_at"].endswith("Z")
    assert payload["conversation"]["messages"][0]["message_type"] == 1
    assert payload["conversation"]["messages"][0]["sender_type"] == "AgentBot"
    assert payload["conversation"]["status"] == "pending"
    # ActiveSupport escaping on the wire, and a signature over exactly those bytes.
    assert b"\\u003cb\\u003e\\u0026\\u003c/b\\u003e" in body
    headers = echo["headers"]
    signed = f"{headers['X-Chatwoot-Timestamp']}.".encode() + body
    expected_sig = hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
    assert headers["X-Chatwoot-Signature"] == f"sha256={expected_sig}"
    assert abs(int(headers["X-Chatwoot-Timestamp"]) - time.time()) < 60


def test_customer_message_webhook_has_a_contact_sender_without_type(
    chatwoot: ChatwootSandbox, api: httpx.Client, receiver: WebhookReceiver, fixtures: Path
) -> None:
    chatwoot.add_webhook(receiver.url, secret=None, kind="account")
    conversation = new_conversation(api)
    via_api = api.post(
        f"/conversations/{conversation['id']}/messages",
        headers=USER,
        json={"content": "I'm the customer", "message_type": "incoming"},
    )
    assert via_api.json()["sender"]["type"] == "contact"
    [message] = receiver.wait_for(lambda p: p.get("message_type") == "incoming")
    fixture = load(fixtures, "message_created.incoming_contact.json")
    assert keys_of(message["payload"]["sender"]) == keys_of(fixture["sender"])
    assert "type" not in message["payload"]["sender"]
    assert message["payload"]["conversation"]["messages"][0]["sender"]["type"] == "contact"
    # No secret: only the delivery id, no timestamp or signature.
    assert "X-Chatwoot-Delivery" in message["headers"]
    assert "X-Chatwoot-Signature" not in message["headers"]
    assert "X-Chatwoot-Timestamp" not in message["headers"]


def test_integer_message_type_makes_the_contact_the_sender(
    chatwoot: ChatwootSandbox, api: httpx.Client
) -> None:
    conversation = new_conversation(api)
    sent = api.post(
        f"/conversations/{conversation['id']}/messages",
        headers=BOT,
        json={"content": "meant as a bot reply", "message_type": 1},
    )
    assert sent.status_code == 200
    assert sent.json()["message_type"] == 1
    assert sent.json()["sender"]["type"] == "contact"


def test_list_messages_has_activity_and_notes_oldest_first(
    chatwoot: ChatwootSandbox, api: httpx.Client, fixtures: Path
) -> None:
    conversation_id = new_conversation(api)["id"]
    chatwoot.customer_message(conversation_id, "first")
    api.post(
        f"/conversations/{conversation_id}/toggle_status", headers=BOT, json={"status": "open"}
    )
    chatwoot.private_note(conversation_id, "note")
    chatwoot.agent_reply(conversation_id, "human reply")
    listed = api.get(f"/conversations/{conversation_id}/messages", headers=USER)
    assert listed.status_code == 200
    fixture = load(fixtures, "api/list_messages.json")
    payload = listed.json()["payload"]
    assert [m["message_type"] for m in payload] == [0, 2, 1, 1]
    assert [m["private"] for m in payload] == [False, False, True, False]
    assert payload[1]["content"] == "Conversation was reopened by Mortgage Broker AI"
    assert keys_of(payload[1]) == keys_of(fixture["payload"][3])  # activity: no sender
    assert keys_of(payload[0]) == keys_of(fixture["payload"][0])
    assert keys_of(listed.json()["meta"]) - {"assignee"} == keys_of(fixture["meta"]) - {"assignee"}
    after = api.get(
        f"/conversations/{conversation_id}/messages",
        headers=USER,
        params={"after": payload[1]["id"]},
    )
    assert [m["id"] for m in after.json()["payload"]] == [m["id"] for m in payload[2:]]
    public = api.get(
        f"/conversations/{conversation_id}/messages",
        headers=USER,
        params={"filter_internal_messages": "true"},
    )
    assert [m["content"] for m in public.json()["payload"]] == ["first", "human reply"]


# -- auth and errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/contacts"),
        ("GET", "/contacts/search?q=tan"),
        ("GET", "/contacts/4600/conversations"),
        ("GET", "/conversations/1000/messages"),
    ],
)
def test_bot_token_is_refused_on_user_only_endpoints(
    api: httpx.Client, method: str, path: str
) -> None:
    new_conversation(api)
    response = api.request(method, path, headers=BOT, json={} if method == "POST" else None)
    assert response.status_code == 401
    assert response.json() == {"error": "Access to this endpoint is not authorized for bots"}


def test_error_bodies_for_bad_tokens_unknown_ids_and_blank_content(
    chatwoot: ChatwootSandbox, api: httpx.Client
) -> None:
    bad = api.get("/conversations/1000", headers={"api_access_token": "nope"})
    assert bad.status_code == 401 and bad.json() == {"error": "Invalid Access Token"}
    assert api.get("/conversations/1000").status_code == 401
    missing = api.get("/conversations/99999", headers=USER)
    assert missing.status_code == 404 and missing.json() == {"error": "Resource could not be found"}
    conversation_id = new_conversation(api)["id"]
    # The hyphenated header name reaches the same token check.
    shown = api.get(
        f"/conversations/{conversation_id}", headers={"Api-Access-Token": "sandbox-bot-token"}
    )
    assert shown.status_code == 200
    blank = api.post(f"/conversations/{conversation_id}/messages", headers=BOT, json={})
    assert blank.status_code == 422 and set(blank.json()) == {"error"}
    other_account = httpx.get(
        f"{chatwoot.url}/api/v1/accounts/4/conversations/{conversation_id}", headers=USER
    )
    assert other_account.status_code == 404


def test_message_flood_limit_is_a_422() -> None:
    with ChatwootSandbox(messages_per_minute_limit=3) as sandbox:
        _, conversation = sandbox.create_lead_conversation("A", "a@example.com", "+6580000001")
        url = f"{sandbox.url}/api/v1/accounts/3/conversations/{conversation['id']}/messages"
        statuses = [
            httpx.post(url, headers=BOT, json={"content": f"m{n}"}).status_code for n in range(4)
        ]
        assert statuses == [200, 200, 200, 422]
        flood = httpx.post(url, headers=BOT, json={"content": "again"})
        assert flood.json() == {"error": "Validation failed: Too many messages"}


# -- conversation writes and their webhooks --------------------------------------------------------


def test_bot_handoff_answers_success_null_and_emits_status_events(
    chatwoot: ChatwootSandbox, api: httpx.Client, receiver: WebhookReceiver, fixtures: Path
) -> None:
    chatwoot.add_webhook(receiver.url, secret=SECRET, kind="agent_bot")
    conversation_id = new_conversation(api)["id"]
    response = api.post(
        f"/conversations/{conversation_id}/toggle_status", headers=BOT, json={"status": "open"}
    )
    assert response.json() == load(fixtures, "api/toggle_status.bot_handoff.json") | {
        "payload": {
            "success": None,
            "conversation_id": conversation_id,
            "current_status": "open",
            "snoozed_until": None,
        }
    }
    assert chatwoot.wait_for_deliveries(5)
    [status_changed] = receiver.events("conversation_status_changed")
    assert status_changed["payload"]["changed_attributes"] is None
    assert status_changed["payload"]["status"] == "open"
    fixture = load(fixtures, "conversation_status_changed.bot_handoff.json")
    assert keys_of(status_changed["payload"]) == keys_of(fixture)
    [updated] = receiver.events("conversation_updated")
    changes = {
        k: v for change in updated["payload"]["changed_attributes"] for k, v in change.items()
    }
    assert changes["status"] == {"previous_value": "pending", "current_value": "open"}
    assert "updated_at" in changes
    assert len(receiver.events("conversation_opened")) == 1
    # The activity message exists in REST history but is never a webhook.
    assert chatwoot.messages(conversation_id)[-1]["message_type"] == 2
    assert not [r for r in receiver.received if b"was reopened" in r["body"]]
    again = api.post(
        f"/conversations/{conversation_id}/toggle_status", headers=BOT, json={"status": "resolved"}
    )
    assert again.json()["payload"]["success"] is True


def test_attributes_labels_priority_and_human_assignment(
    chatwoot: ChatwootSandbox, api: httpx.Client, receiver: WebhookReceiver, fixtures: Path
) -> None:
    chatwoot.add_webhook(receiver.url, secret=SECRET, kind="agent_bot")
    conversation_id = new_conversation(api)["id"]
    base = f"/conversations/{conversation_id}"
    replaced = api.post(
        f"{base}/custom_attributes", headers=BOT, json={"custom_attributes": {"stage": "qualified"}}
    )
    assert replaced.json() == {"custom_attributes": {"stage": "qualified"}}  # replace, not merge
    labels = api.post(f"{base}/labels", headers=BOT, json={"labels": ["hdb-loan", "refinancing"]})
    assert labels.json() == load(fixtures, "api/labels.json")
    assert api.get(f"{base}/labels", headers=BOT).json() == {"payload": ["hdb-loan", "refinancing"]}
    priority = api.post(f"{base}/toggle_priority", headers=BOT, json={"priority": "high"})
    assert priority.status_code == 200 and priority.content == b""
    assigned = api.post(f"{base}/assignments", headers=BOT, json={"assignee_id": 21})
    assert keys_of(assigned.json()) == keys_of(load(fixtures, "api/assignment.agent.json"))
    assert chatwoot.wait_for_deliveries(5)
    updates = [e["payload"] for e in receiver.events("conversation_updated")]
    assigned_update = next(
        p for p in updates if any("assignee_id" in c for c in p["changed_attributes"])
    )
    assert assigned_update["meta"]["assignee_type"] == "User"
    assert assigned_update["meta"]["assignee"]["type"] == "user"
    fixture = load(fixtures, "conversation_updated.assignee_changed.json")
    assert keys_of(assigned_update["meta"]["assignee"]) == keys_of(fixture["meta"]["assignee"])
    attribute_update = next(
        p for p in updates if any("custom_attributes" in c for c in p["changed_attributes"])
    )
    assert attribute_update["custom_attributes"] == {"stage": "qualified"}
    shown = chatwoot.conversation(conversation_id)
    assert shown["priority"] == "high" and shown["meta"]["assignee_type"] == "User"


def test_sandbox_helpers_emit_human_reply_and_note_webhooks(
    chatwoot: ChatwootSandbox, receiver: WebhookReceiver, fixtures: Path
) -> None:
    chatwoot.add_webhook(receiver.url, secret=SECRET, kind="agent_bot")
    _, conversation = chatwoot.create_lead_conversation(
        "Tan Wei Ming", "t@example.com", "+6591234567"
    )
    chatwoot.customer_message(conversation["id"], "hello")
    chatwoot.assign_human(conversation["id"])
    chatwoot.private_note(conversation["id"], "careful: price sensitive")
    chatwoot.agent_reply(conversation["id"], "Hi, Priya here")
    [note] = receiver.wait_for(lambda p: p.get("private") is True)
    fixture = load(fixtures, "message_created.private_note.json")
    assert note["payload"]["sender"] == fixture["sender"] | {
        "email": note["payload"]["sender"]["email"]
    }
    assert note["payload"]["conversation"]["messages"][0]["content"] == "hello"  # notes excluded
    [reply] = receiver.wait_for(lambda p: p.get("content") == "Hi, Priya here")
    assert reply["payload"]["sender"]["type"] == "user"
    assert reply["payload"]["conversation"]["meta"]["assignee_type"] == "User"
    assert reply["payload"]["conversation"]["first_reply_created_at"] is not None


# -- signing and delivery semantics ----------------------------------------------------------------


def test_signing_reproduces_the_signed_fixture(fixtures: Path) -> None:
    delivery = load(fixtures, "signed/delivery.json")
    raw = (fixtures / "signed" / delivery["body_file"]).read_bytes()
    headers = delivery["headers"]
    assert (
        sign_webhook(delivery["secret"], headers["X-Chatwoot-Timestamp"], raw)
        == headers["X-Chatwoot-Signature"]
    )
    # Re-encoding the pretty fixture gives the wire bytes exactly (ActiveSupport's encoding).
    encoded = encode_webhook_body(load(fixtures, "message_created.private_note.json"))
    assert hashlib.sha256(encoded).hexdigest() == delivery["body_sha256"]


def test_agent_bot_retries_500_with_the_same_delivery_id(
    chatwoot: ChatwootSandbox, receiver: WebhookReceiver
) -> None:
    chatwoot.add_webhook(receiver.url, secret=SECRET, kind="agent_bot")
    _, conversation = chatwoot.create_lead_conversation("A", "a@example.com", "+6580000002")
    receiver.statuses.extend([500, 429])
    chatwoot.customer_message(conversation["id"], "retry me")
    attempts = receiver.wait_for(lambda p: p.get("content") == "retry me", count=3)
    assert [a["status"] for a in attempts] == [500, 429, 200]
    assert len({a["headers"]["X-Chatwoot-Delivery"] for a in attempts}) == 1
    for attempt in attempts:
        signed = f"{attempt['headers']['X-Chatwoot-Timestamp']}.".encode() + attempt["body"]
        digest = hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
        assert attempt["headers"]["X-Chatwoot-Signature"] == f"sha256={digest}"
    assert chatwoot.wait_for_deliveries(5)
    records = [d for d in chatwoot.deliveries() if d["event"] == "message_created"]
    assert [(d["attempt"], d["status"]) for d in records] == [(1, 500), (2, 429), (3, 200)]
    assert chatwoot.conversation(conversation["id"])["status"] == "pending"


def test_agent_bot_503_is_final_and_hands_the_conversation_to_humans(
    chatwoot: ChatwootSandbox, receiver: WebhookReceiver
) -> None:
    account = WebhookReceiver()
    try:
        chatwoot.add_webhook(receiver.url, secret=SECRET, kind="agent_bot")
        chatwoot.add_webhook(
            account.url, secret="acc", kind="account", subscriptions=["message_created"]
        )
        _, conversation = chatwoot.create_lead_conversation("A", "a@example.com", "+6580000003")
        receiver.statuses.append(503)
        account.statuses.append(500)
        chatwoot.customer_message(conversation["id"], "nobody home")
        assert chatwoot.wait_for_deliveries(5)
        bot_attempts = [
            d
            for d in chatwoot.deliveries()
            if d["kind"] == "agent_bot" and d["event"] == "message_created"
        ]
        account_attempts = [d for d in chatwoot.deliveries() if d["kind"] == "account"]
        assert [d["status"] for d in bot_attempts] == [503]
        assert [d["status"] for d in account_attempts] == [500]  # no retry, and only subscribed
        shown = chatwoot.conversation(conversation["id"])
        assert shown["status"] == "open"
        assert shown["messages"][-1]["content"] == (
            "Conversation was marked open by system due to an error with the agent bot."
        )
    finally:
        account.close()


def test_agent_bot_timeout_is_not_retried(receiver: WebhookReceiver) -> None:
    with ChatwootSandbox(webhook_timeout_s=0.2, webhook_retry_wait_s=0.05) as chatwoot:
        chatwoot.add_webhook(receiver.url, secret=SECRET, kind="agent_bot")
        _, conversation = chatwoot.create_lead_conversation("A", "a@example.com", "+6580000004")
        receiver.delay_s = 0.5
        chatwoot.customer_message(conversation["id"], "slow bot")
        assert chatwoot.wait_for_deliveries(5)
        [attempt] = [d for d in chatwoot.deliveries() if d["event"] == "message_created"]
        assert attempt["status"] is None and "Timeout" in attempt["error"]
        assert chatwoot.conversation(conversation["id"])["status"] == "open"


# -- controls over HTTP ----------------------------------------------------------------------------


def test_faults_are_controlled_over_http_and_spare_control_routes(
    chatwoot: ChatwootSandbox, api: httpx.Client
) -> None:
    conversation_id = new_conversation(api)["id"]
    with ChatwootSandboxControl(chatwoot.url) as control:
        assert control.set_faults(fail_next=2)["fail_next"] == 2
        statuses = [
            api.get(f"/conversations/{conversation_id}", headers=USER).status_code for _ in range(3)
        ]
        assert statuses == [500, 500, 200]
        control.set_faults(rate_limit_rate=1.0)
        limited = api.get(f"/conversations/{conversation_id}", headers=USER)
        assert limited.status_code == 429
        assert limited.text == "Retry later\n"
        assert limited.headers["content-type"].startswith("text/plain")
        assert limited.headers["retry-after"] == "1"
        assert control.conversations()[0]["id"] == conversation_id  # control is never faulted
        control.reset_faults()
        control.set_faults(latency_ms=150)
        started = time.monotonic()
        assert api.get(f"/conversations/{conversation_id}", headers=USER).status_code == 200
        assert time.monotonic() - started >= 0.15
        control.reset_faults()
        bad = httpx.put(f"{chatwoot.url}/_sandbox/faults", json={"explode": True})
        assert bad.status_code == 400 and "explode" in bad.json()["error"]


def test_control_client_drives_conversations_and_reads_requests(
    chatwoot: ChatwootSandbox, api: httpx.Client, receiver: WebhookReceiver
) -> None:
    with ChatwootSandboxControl(chatwoot.url) as control:
        control.set_webhooks(
            [{"url": receiver.url, "secret": SECRET, "kind": "agent_bot", "subscriptions": None}]
        )
        _, conversation = control.create_lead_conversation(
            "Lim Mei Ling", "mei@example.com", "+6591112222"
        )
        control.customer_message(conversation["id"], "Is 2.5% a good rate?")
        control.agent_reply(conversation["id"], "Let me check")
        control.private_note(conversation["id"], "VIP")
        control.assign_human(conversation["id"])
        assert control.wait_for_deliveries(5)
        assert [m["content"] for m in control.messages(conversation["id"])][:3] == [
            "Is 2.5% a good rate?",
            "Let me check",
            "VIP",
        ]
        assert control.conversation(conversation["id"])["meta"]["assignee_type"] == "User"
        assert {d["event"] for d in control.deliveries()} >= {
            "message_created",
            "conversation_updated",
        }
        api.get(f"/conversations/{conversation['id']}", headers=BOT)
        api.get("/contacts/search?q=mei", headers=BOT)
        logged = control.requests()
        assert [(r["method"], r["token_kind"], r["status"]) for r in logged] == [
            ("GET", "bot", 200),
            ("GET", "bot", 401),
        ]
        assert control.info()["bot_token"] == "sandbox-bot-token"
        control.reset()
        assert control.conversations() == [] and control.deliveries() == []
        assert control.webhooks()[0]["url"] == receiver.url  # webhooks survive a reset
