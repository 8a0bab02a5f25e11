"""ChatwootClient against the Chatwoot sandbox over real HTTP: every method, every error mapping."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from app.adapters.chatwoot import ChatwootClient
from app.adapters.http_pool import PooledHttp
from app.ports.chatwoot import (
    ChatwootAuthError,
    ChatwootError,
    ChatwootNotFound,
    ChatwootRateLimited,
    ChatwootUnavailable,
    ChatwootValidationError,
)
from app.sandbox.chatwoot import ChatwootSandbox

ACCOUNT_ID = 3
INBOX_ID = 7
USER_TOKEN = "sandbox-user-token"
BOT_TOKEN = "sandbox-bot-token"
BOT_ID = 12


@pytest.fixture(scope="module")
def running_sandbox() -> Iterator[ChatwootSandbox]:
    # One server per module (stopping one takes half a second); each test gets it reset.
    with ChatwootSandbox(
        account_id=ACCOUNT_ID,
        inbox_id=INBOX_ID,
        api_token=USER_TOKEN,
        bot_token=BOT_TOKEN,
        bot_id=BOT_ID,
        port=0,
    ) as running:
        yield running


@pytest.fixture
def sandbox(running_sandbox: ChatwootSandbox) -> ChatwootSandbox:
    running_sandbox.reset()
    return running_sandbox


@pytest.fixture
def http(sandbox: ChatwootSandbox) -> Iterator[PooledHttp]:
    client = http_for(sandbox.url)
    yield client
    client.close()


def http_for(url: str, *, timeout_s: float = 5.0) -> PooledHttp:
    return PooledHttp(url, timeout_s=timeout_s, connect_timeout_s=timeout_s, max_idle=4)


def client_for(
    sandbox: ChatwootSandbox,
    http: PooledHttp,
    *,
    api_token: str = USER_TOKEN,
    bot_token: str | None = BOT_TOKEN,
) -> ChatwootClient:
    return ChatwootClient(
        http, base_url=sandbox.url, account_id=ACCOUNT_ID, api_token=api_token, bot_token=bot_token
    )


@pytest.fixture
def chatwoot(sandbox: ChatwootSandbox, http: PooledHttp) -> ChatwootClient:
    return client_for(sandbox, http)


@pytest.fixture
def lead(sandbox: ChatwootSandbox) -> tuple[dict[str, Any], dict[str, Any]]:
    """A website lead already in Chatwoot: (contact, conversation)."""
    return sandbox.create_lead_conversation(
        "Tan Wei Ming", "weiming.tan@example.com", "+6591234567"
    )


def last_request(sandbox: ChatwootSandbox, method: str, path_suffix: str) -> dict[str, Any]:
    matching = [
        r for r in sandbox.requests() if r["method"] == method and r["path"].endswith(path_suffix)
    ]
    assert matching, f"no {method} …{path_suffix} request recorded"
    return matching[-1]


# ------------------------------------------------------------------------------------- contacts


def test_search_contacts_returns_the_payload_list(chatwoot: ChatwootClient, lead: Any) -> None:
    contact, _ = lead

    found = chatwoot.search_contacts("weiming.tan@example.com")

    assert [c["id"] for c in found] == [contact["id"]]
    assert chatwoot.search_contacts("nobody@example.com") == []


def test_create_contact_returns_the_contact_made_with_the_user_token(
    chatwoot: ChatwootClient, sandbox: ChatwootSandbox
) -> None:
    contact = chatwoot.create_contact(
        name="Lim Hui Min",
        email="huimin.lim@example.com",
        phone_number="+6598765432",
        inbox_id=INBOX_ID,
        identifier="crm-1",
        custom_attributes={"crm_lead_id": "HL-1"},
    )

    assert contact["email"] == "huimin.lim@example.com"
    assert contact["phone_number"] == "+6598765432"
    assert contact["custom_attributes"] == {"crm_lead_id": "HL-1"}
    assert contact["contact_inboxes"][0]["inbox"]["id"] == INBOX_ID
    request = last_request(sandbox, "POST", "/contacts")
    assert request["token_kind"] == "user"
    assert request["json"]["inbox_id"] == INBOX_ID


def test_duplicate_contact_raises_validation_error_with_attributes(
    chatwoot: ChatwootClient, lead: Any
) -> None:
    with pytest.raises(ChatwootValidationError) as caught:
        chatwoot.create_contact(
            name="Someone Else",
            email="weiming.tan@example.com",
            phone_number=None,
            inbox_id=INBOX_ID,
        )

    error = caught.value
    assert error.status == 422
    assert error.attributes == ["email"]
    assert not error.retryable
    assert "Email has already been taken" in str(error)


def test_find_or_create_contact_finds_by_email_then_phone_else_creates(
    chatwoot: ChatwootClient, lead: Any
) -> None:
    contact, _ = lead

    by_email = chatwoot.find_or_create_contact(
        name="Wei Ming",
        email="WeiMing.Tan@example.com",
        phone_number=None,
        inbox_id=INBOX_ID,
    )
    by_phone = chatwoot.find_or_create_contact(
        name="Wei Ming",
        email="another.address@example.com",
        phone_number="+6591234567",
        inbox_id=INBOX_ID,
    )
    created = chatwoot.find_or_create_contact(
        name="Grace Ong",
        email="grace.ong@example.com",
        phone_number="+6590001111",
        inbox_id=INBOX_ID,
    )

    assert by_email["id"] == contact["id"]
    assert by_phone["id"] == contact["id"]
    assert created["id"] != contact["id"]
    assert created["email"] == "grace.ong@example.com"


class LateSightingClient(ChatwootClient):
    """Its first searches miss, as when another request creates the same lead at the same time."""

    def __init__(self, *args: Any, blind_searches: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.blind_searches = blind_searches

    def search_contacts(self, query: str) -> list[dict[str, Any]]:
        if self.blind_searches > 0:
            self.blind_searches -= 1
            return []
        return super().search_contacts(query)


def test_find_or_create_contact_returns_the_winner_when_create_races_into_a_duplicate(
    sandbox: ChatwootSandbox, http: PooledHttp, lead: Any
) -> None:
    contact, _ = lead
    racing = LateSightingClient(
        http,
        base_url=sandbox.url,
        account_id=ACCOUNT_ID,
        api_token=USER_TOKEN,
        bot_token=BOT_TOKEN,
        blind_searches=2,  # the email and phone searches before the create
    )

    found = racing.find_or_create_contact(
        name="Tan Wei Ming",
        email="weiming.tan@example.com",
        phone_number="+6591234567",
        inbox_id=INBOX_ID,
    )

    assert found["id"] == contact["id"]
    assert last_request(sandbox, "POST", "/contacts")["status"] == 422


def test_contact_conversations_lists_the_contacts_conversations(
    chatwoot: ChatwootClient, lead: Any
) -> None:
    contact, conversation = lead

    conversations = chatwoot.contact_conversations(contact["id"])

    assert [c["id"] for c in conversations] == [conversation["id"]]


# -------------------------------------------------------------------------------- conversations


def test_get_conversation_returns_the_conversation(chatwoot: ChatwootClient, lead: Any) -> None:
    _, conversation = lead

    shown = chatwoot.get_conversation(conversation["id"])

    assert shown["id"] == conversation["id"]
    assert shown["status"] == "pending"
    assert shown["inbox_id"] == INBOX_ID


def test_create_conversation_returns_a_pending_conversation_with_attributes(
    chatwoot: ChatwootClient, lead: Any
) -> None:
    contact, first = lead

    created = chatwoot.create_conversation(
        inbox_id=INBOX_ID,
        contact_id=contact["id"],
        custom_attributes={"lead_source": "website"},
        additional_attributes={"referer": "https://nextnest.example/apply"},
    )

    assert created["id"] != first["id"]
    assert created["status"] == "pending"
    assert created["custom_attributes"] == {"lead_source": "website"}
    assert created["additional_attributes"] == {"referer": "https://nextnest.example/apply"}


def test_update_custom_attributes_replaces_the_hash(
    chatwoot: ChatwootClient, sandbox: ChatwootSandbox, lead: Any
) -> None:
    _, conversation = lead
    chatwoot.update_custom_attributes(conversation["id"], {"a": 1, "b": 2})

    result = chatwoot.update_custom_attributes(conversation["id"], {"c": 3})

    assert result == {"custom_attributes": {"c": 3}}
    assert chatwoot.get_conversation(conversation["id"])["custom_attributes"] == {"c": 3}
    assert last_request(sandbox, "POST", "/custom_attributes")["token_kind"] == "bot"


def test_merge_custom_attributes_keeps_the_other_attributes(
    chatwoot: ChatwootClient, lead: Any
) -> None:
    _, conversation = lead
    chatwoot.update_custom_attributes(conversation["id"], {"lead_source": "website", "score": 40})

    result = chatwoot.merge_custom_attributes(conversation["id"], {"score": 65, "broker": "sarah"})

    assert result["custom_attributes"] == {"lead_source": "website", "score": 65, "broker": "sarah"}


def test_toggle_status_with_the_bot_token_is_a_handoff(
    chatwoot: ChatwootClient, sandbox: ChatwootSandbox, lead: Any
) -> None:
    _, conversation = lead

    result = chatwoot.toggle_status(conversation["id"], "open")

    assert result["payload"]["current_status"] == "open"
    assert result["payload"]["success"] is None  # Chatwoot's bot_handoff! path
    assert last_request(sandbox, "POST", "/toggle_status")["token_kind"] == "bot"


def test_toggle_status_rejects_an_unknown_status(chatwoot: ChatwootClient) -> None:
    with pytest.raises(ValueError, match="status must be one of"):
        chatwoot.toggle_status(1, "closed")


# ------------------------------------------------------------------------------------- messages


def test_send_message_posts_message_type_as_the_string_outgoing_with_the_bot_token(
    chatwoot: ChatwootClient, sandbox: ChatwootSandbox, lead: Any
) -> None:
    _, conversation = lead

    sent = chatwoot.send_message(
        conversation["id"],
        "Hi Wei Ming, Sarah here.",
        content_attributes={"broker_request_id": "job-1"},
        echo_id="broker-job-1",
    )

    request = last_request(sandbox, "POST", f"/conversations/{conversation['id']}/messages")
    assert request["json"]["message_type"] == "outgoing"
    assert request["token_kind"] == "bot"
    assert sent["message_type"] == 1
    assert sent["echo_id"] == "broker-job-1"
    assert sent["sender"]["type"] == "agent_bot"
    assert sent["sender"]["id"] == BOT_ID
    assert sent["content_attributes"] == {"broker_request_id": "job-1"}
    stored = sandbox.messages(conversation["id"])[-1]
    assert stored["sender_type"] == "AgentBot"
    assert stored["private"] is False


def test_send_message_without_a_bot_token_uses_the_user_token(
    sandbox: ChatwootSandbox, http: PooledHttp, lead: Any
) -> None:
    _, conversation = lead
    chatwoot = client_for(sandbox, http, bot_token=None)

    sent = chatwoot.send_message(conversation["id"], "A note for the team.", private=True)

    assert sent["private"] is True
    assert sent["sender"]["type"] == "user"
    assert last_request(sandbox, "POST", "/messages")["token_kind"] == "user"


def test_list_messages_is_oldest_first_and_pages_with_before_and_after(
    chatwoot: ChatwootClient, sandbox: ChatwootSandbox, lead: Any
) -> None:
    _, conversation = lead
    conversation_id = conversation["id"]
    ids = [sandbox.customer_message(conversation_id, f"message {n}")["id"] for n in range(25)]

    latest = chatwoot.list_messages(conversation_id)
    older = chatwoot.list_messages(conversation_id, before=latest[0]["id"])
    newer = chatwoot.list_messages(conversation_id, after=ids[21])

    assert [m["id"] for m in latest] == ids[-20:]
    assert [m["id"] for m in older] == ids[:5]
    assert [m["content"] for m in newer] == ["message 22", "message 23", "message 24"]
    assert last_request(sandbox, "GET", "/messages")["token_kind"] == "user"


def test_find_message_with_marker_finds_a_reply_pages_back(
    chatwoot: ChatwootClient, sandbox: ChatwootSandbox, lead: Any
) -> None:
    _, conversation = lead
    conversation_id = conversation["id"]
    sent = chatwoot.send_message(
        conversation_id, "Our reply.", content_attributes={"broker_request_id": "job-42"}
    )
    for n in range(45):  # pushes the reply back to the third page
        sandbox.customer_message(conversation_id, f"follow-up {n}")

    found = chatwoot.find_message_with_marker(conversation_id, "broker_request_id", "job-42")
    missing = chatwoot.find_message_with_marker(conversation_id, "broker_request_id", "job-43")

    assert found is not None
    assert found["id"] == sent["id"]
    assert missing is None


def test_find_message_with_marker_can_skip_private_notes(
    chatwoot: ChatwootClient, lead: Any
) -> None:
    _, conversation = lead
    chatwoot.send_message(
        conversation["id"], "internal", private=True, content_attributes={"job": "7"}
    )

    assert chatwoot.find_message_with_marker(conversation["id"], "job", "7") is not None
    assert (
        chatwoot.find_message_with_marker(conversation["id"], "job", "7", include_private=False)
        is None
    )


def test_message_flood_is_a_retryable_validation_error() -> None:
    with ChatwootSandbox(
        account_id=ACCOUNT_ID,
        inbox_id=INBOX_ID,
        api_token=USER_TOKEN,
        bot_token=BOT_TOKEN,
        bot_id=BOT_ID,
        messages_per_minute_limit=2,
    ) as sandbox:
        _, conversation = sandbox.create_lead_conversation("A", "a@example.com", "+6580000001")
        chatwoot = client_for(sandbox, http_for(sandbox.url))
        chatwoot.send_message(conversation["id"], "one")
        chatwoot.send_message(conversation["id"], "two")

        with pytest.raises(ChatwootValidationError) as caught:
            chatwoot.send_message(conversation["id"], "three")

    assert caught.value.retryable
    assert caught.value.retry_after == 60


# ------------------------------------------------------------------------------- auth and ping


def test_ping_succeeds_with_the_user_token(chatwoot: ChatwootClient) -> None:
    chatwoot.ping()


def test_bad_token_raises_auth_error_without_the_token(
    sandbox: ChatwootSandbox, http: PooledHttp
) -> None:
    chatwoot = client_for(sandbox, http, api_token="not-a-real-token-xyz")

    with pytest.raises(ChatwootAuthError) as caught:
        chatwoot.ping()

    error = caught.value
    assert error.status == 401
    assert not error.retryable
    assert "Invalid Access Token" in str(error)
    assert "not-a-real-token-xyz" not in str(error)


def test_bot_token_on_a_user_only_endpoint_raises_auth_error(
    sandbox: ChatwootSandbox, http: PooledHttp, lead: Any
) -> None:
    _, conversation = lead
    bot_as_user = client_for(sandbox, http, api_token=BOT_TOKEN)

    with pytest.raises(ChatwootAuthError, match="not authorized for bots"):
        bot_as_user.search_contacts("weiming")
    with pytest.raises(ChatwootAuthError, match="not authorized for bots"):
        bot_as_user.list_messages(conversation["id"])


# ----------------------------------------------------------------------------- error mapping


def test_unknown_conversation_raises_not_found(chatwoot: ChatwootClient) -> None:
    with pytest.raises(ChatwootNotFound) as caught:
        chatwoot.get_conversation(987654)

    assert caught.value.status == 404
    assert not caught.value.retryable
    assert "Resource could not be found" in str(caught.value)


def test_plain_text_429_raises_rate_limited_with_retry_after(
    chatwoot: ChatwootClient, sandbox: ChatwootSandbox
) -> None:
    sandbox.faults.set(fail_next=1, fail_next_status=429)

    with pytest.raises(ChatwootRateLimited) as caught:
        chatwoot.search_contacts("weiming")

    error = caught.value
    assert error.status == 429
    assert error.retryable
    assert error.retry_after == 1.0
    assert "Retry later" in str(error)


def test_rate_limit_rate_fault_raises_rate_limited(
    chatwoot: ChatwootClient, sandbox: ChatwootSandbox, lead: Any
) -> None:
    _, conversation = lead
    sandbox.faults.set(rate_limit_rate=1.0)

    with pytest.raises(ChatwootRateLimited):
        chatwoot.send_message(conversation["id"], "hello")


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_raise_unavailable(
    chatwoot: ChatwootClient, sandbox: ChatwootSandbox, lead: Any, status: int
) -> None:
    _, conversation = lead
    sandbox.faults.set(fail_next=1, fail_next_status=status)

    with pytest.raises(ChatwootUnavailable) as caught:
        chatwoot.get_conversation(conversation["id"])

    assert caught.value.status == status
    assert caught.value.retryable
    # The fault was used up: the next call goes through.
    assert chatwoot.get_conversation(conversation["id"])["id"] == conversation["id"]


def test_other_client_errors_are_not_retryable(
    chatwoot: ChatwootClient, sandbox: ChatwootSandbox
) -> None:
    sandbox.faults.set(fail_next=1, fail_next_status=403)

    with pytest.raises(ChatwootError) as caught:
        chatwoot.search_contacts("weiming")

    assert type(caught.value) is ChatwootError
    assert caught.value.status == 403
    assert not caught.value.retryable


def test_timeout_raises_unavailable(sandbox: ChatwootSandbox, lead: Any) -> None:
    _, conversation = lead
    sandbox.faults.set(timeout_rate=1.0, hang_s=5.0)

    chatwoot = client_for(sandbox, http_for(sandbox.url, timeout_s=0.3))
    with pytest.raises(ChatwootUnavailable) as caught:
        chatwoot.send_message(conversation["id"], "hello")

    assert caught.value.status is None
    assert caught.value.retryable
    assert "timed out" in str(caught.value)
    # Release the hanging request and let it finish, so that it is not recorded in the next test.
    sandbox.faults.reset()
    deadline = time.monotonic() + 5
    while not sandbox.requests() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_connection_refused_raises_unavailable() -> None:
    with ChatwootSandbox(port=0) as stopped_soon:
        url = stopped_soon.url
    chatwoot = ChatwootClient(
        http_for(url), base_url=url, account_id=ACCOUNT_ID, api_token=USER_TOKEN
    )

    with pytest.raises(ChatwootUnavailable) as caught:
        chatwoot.ping()

    assert caught.value.retryable
    assert USER_TOKEN not in str(caught.value)


# ---------------------------------------------- responses the sandbox never gives (a fixed server)


@contextmanager
def fake_chatwoot(
    status: int, body: str, headers: dict[str, str] | None = None
) -> Iterator[ChatwootClient]:
    """A server on 127.0.0.1 that gives every request the same answer."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            data = body.encode()
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield ChatwootClient(
            http_for(url), base_url=url, account_id=ACCOUNT_ID, api_token=USER_TOKEN
        )
    finally:
        server.shutdown()
        server.server_close()


def test_non_json_success_body_raises_unavailable() -> None:
    with (
        fake_chatwoot(200, "<html>maintenance</html>", {"Content-Type": "text/html"}) as chatwoot,
        pytest.raises(ChatwootUnavailable, match="expected JSON, got text/html") as caught,
    ):
        chatwoot.get_conversation(1)

    assert caught.value.retryable


def test_retry_after_as_an_http_date_is_seconds_from_now() -> None:
    when = datetime.now(UTC) + timedelta(seconds=120)
    retry_after = {"Retry-After": format_datetime(when, True)}
    with (
        fake_chatwoot(503, "Service Unavailable", retry_after) as chatwoot,
        pytest.raises(ChatwootUnavailable) as caught,
    ):
        chatwoot.ping()

    assert caught.value.retry_after is not None
    assert 100 < caught.value.retry_after <= 120


def test_error_text_is_truncated_and_never_contains_the_token() -> None:
    body = json.dumps({"error": f"bad token {USER_TOKEN} " + "x" * 1000})
    with (
        fake_chatwoot(422, body, {"Content-Type": "application/json"}) as chatwoot,
        pytest.raises(ChatwootValidationError) as caught,
    ):
        chatwoot.ping()

    message = str(caught.value)
    assert USER_TOKEN not in message
    assert len(message) < 400
