"""Chatwoot REST client: the few endpoints the broker uses, with Chatwoot's errors mapped to the
port's (app/ports/chatwoot.py). It speaks JSON; the port's implementation over it, which reads
that JSON into the domain's values, is chatwoot_gateway.py.

Paths, payload shapes, token rules and error bodies follow docs/chatwoot-contract.md §4.
Two tokens: the *user* token (agent or admin) reads contacts, conversations and message history;
the *agent-bot* token, when configured, does the bot's writes (replies, custom attributes, status),
so they show up as the bot in Chatwoot. Bot tokens get 401 on everything else.

Every failure is a `ChatwootError` whose `retryable` and `retry_after` tell the pipeline whether and
when to try again, and whose message is safe to log: status, method, path (never the query, which
may hold an email or phone number) and Chatwoot's error text, never a token.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

from app.adapters.http_pool import HttpFailure, HttpReply, PooledHttp
from app.ports.chatwoot import (
    ChatwootAuthError,
    ChatwootError,
    ChatwootNotFound,
    ChatwootRateLimited,
    ChatwootUnavailable,
    ChatwootValidationError,
)

logger = logging.getLogger(__name__)

JSONDict = dict[str, Any]

MAX_ERROR_TEXT = 300
# The per-conversation flood limit is 200 messages a minute, so waiting a minute always clears it.
MESSAGE_FLOOD_RETRY_AFTER_S = 60.0
MESSAGE_FLOOD_TEXT = "too many messages"
# Chatwoot's message finder returns 20 messages per page without `after`.
MESSAGES_PAGE_SIZE = 20
CONVERSATION_STATUSES = frozenset({"open", "resolved", "pending", "snoozed"})


class ChatwootClient:
    """Synchronous client for one Chatwoot account.

    The caller owns `http` (and so its timeouts, connection pool and lifetime); its origin is
    Chatwoot's, and `base_url` may add a path prefix (Chatwoot behind a reverse proxy).
    """

    def __init__(
        self,
        http: PooledHttp,
        *,
        base_url: str,
        account_id: int,
        api_token: str,
        bot_token: str | None = None,
    ) -> None:
        self._http = http
        prefix = urlsplit(base_url).path.rstrip("/")
        self._account_path = f"{prefix}/api/v1/accounts/{account_id}"
        self._api_token = api_token
        self._bot_token = bot_token or api_token
        self._secrets = tuple(t for t in (api_token, bot_token) if t)

    # ----------------------------------------------------------------------------- contacts

    def search_contacts(self, query: str) -> list[JSONDict]:
        """Contacts whose name, email or phone contains `query` (first page, 15 at most)."""
        body = self._call("GET", "/contacts/search", token=self._api_token, params={"q": query})
        return _list_of_dicts(_field(body, "payload"), "GET /contacts/search")

    def create_contact(
        self,
        *,
        name: str,
        email: str | None,
        phone_number: str | None,
        inbox_id: int,
        identifier: str | None = None,
        custom_attributes: Mapping[str, Any] | None = None,
    ) -> JSONDict:
        """Create a contact with a contact-inbox in `inbox_id`; returns `payload.contact`.

        A duplicate email, phone number or identifier raises `ChatwootValidationError` whose
        `attributes` names the clashing fields.
        """
        request: JSONDict = {"name": name, "inbox_id": inbox_id}
        _put_if_set(request, "email", email)
        _put_if_set(request, "phone_number", phone_number)
        _put_if_set(request, "identifier", identifier)
        if custom_attributes is not None:
            request["custom_attributes"] = dict(custom_attributes)
        body = self._call("POST", "/contacts", token=self._api_token, json_body=request)
        payload = _dict(_field(body, "payload"), "POST /contacts")
        return _dict(payload.get("contact"), "POST /contacts")

    def find_or_create_contact(
        self,
        *,
        name: str,
        email: str | None,
        phone_number: str | None,
        inbox_id: int,
        identifier: str | None = None,
        custom_attributes: Mapping[str, Any] | None = None,
    ) -> JSONDict:
        """The contact with this email (first) or phone number, created if neither is known.

        Two requests for the same lead can race: if our create loses with a 422 duplicate, the
        winner's contact is looked up again and returned.
        """
        found = self._find_contact(email=email, phone_number=phone_number)
        if found is not None:
            return found
        try:
            return self.create_contact(
                name=name,
                email=email,
                phone_number=phone_number,
                inbox_id=inbox_id,
                identifier=identifier,
                custom_attributes=custom_attributes,
            )
        except ChatwootValidationError as exc:
            if exc.retryable:
                raise
            found = self._find_contact(email=email, phone_number=phone_number)
            if found is None:
                raise
            logger.info(
                "contact create lost a race (attributes=%s); using existing contact %s",
                exc.attributes,
                found.get("id"),
            )
            return found

    def _find_contact(self, *, email: str | None, phone_number: str | None) -> JSONDict | None:
        # Search is a substring match on name, email and phone, so keep exact matches only.
        if email:
            wanted = email.strip().lower()
            for contact in self.search_contacts(email):
                if str(contact.get("email") or "").strip().lower() == wanted:
                    return contact
        if phone_number:
            for contact in self.search_contacts(phone_number):
                if contact.get("phone_number") == phone_number:
                    return contact
        return None

    def contact_conversations(self, contact_id: int) -> list[JSONDict]:
        """The contact's last 20 conversations, most recently active first."""
        path = f"/contacts/{contact_id}/conversations"
        body = self._call("GET", path, token=self._api_token)
        return _list_of_dicts(_field(body, "payload"), f"GET {path}")

    # ------------------------------------------------------------------------ conversations

    def get_conversation(self, conversation_id: int) -> JSONDict:
        """The `<conversation>` partial for a conversation display id."""
        path = f"/conversations/{conversation_id}"
        return _dict(self._call("GET", path, token=self._api_token), f"GET {path}")

    def create_conversation(
        self,
        *,
        inbox_id: int,
        contact_id: int,
        source_id: str | None = None,
        custom_attributes: Mapping[str, Any] | None = None,
        additional_attributes: Mapping[str, Any] | None = None,
    ) -> JSONDict:
        """Open a conversation for a contact in an inbox; returns the `<conversation>` partial.

        If the inbox has an active agent bot, Chatwoot creates it as `pending`.
        """
        request: JSONDict = {"inbox_id": inbox_id, "contact_id": contact_id}
        _put_if_set(request, "source_id", source_id)
        if custom_attributes is not None:
            request["custom_attributes"] = dict(custom_attributes)
        if additional_attributes is not None:
            request["additional_attributes"] = dict(additional_attributes)
        body = self._call("POST", "/conversations", token=self._api_token, json_body=request)
        return _dict(body, "POST /conversations")

    def update_custom_attributes(
        self, conversation_id: int, custom_attributes: Mapping[str, Any]
    ) -> JSONDict:
        """Set the conversation's custom attributes; returns `{"custom_attributes": {...}}`.

        Chatwoot REPLACES the whole hash: pass every attribute to keep (see
        `merge_custom_attributes`).
        """
        path = f"/conversations/{conversation_id}/custom_attributes"
        request = {"custom_attributes": dict(custom_attributes)}
        body = self._call("POST", path, token=self._bot_token, json_body=request)
        return _dict(body, f"POST {path}")

    def merge_custom_attributes(self, conversation_id: int, changes: Mapping[str, Any]) -> JSONDict:
        """Read the attributes, apply `changes` on top, write the whole hash back.

        Not atomic: a write by someone else between our read and our write is lost. Chatwoot
        offers no compare-and-set, so callers keep attribute writes for one conversation on one
        pipeline step at a time.
        """
        conversation = self.get_conversation(conversation_id)
        current = conversation.get("custom_attributes")
        merged = {**(current if isinstance(current, dict) else {}), **changes}
        return self.update_custom_attributes(conversation_id, merged)

    def toggle_status(self, conversation_id: int, status: str) -> JSONDict:
        """Set the status; returns `{"meta": {}, "payload": {"success", "current_status", ...}}`.

        With the bot token, pending → open is Chatwoot's bot handoff (`success` is then null).
        """
        if status not in CONVERSATION_STATUSES:
            raise ValueError(f"status must be one of {sorted(CONVERSATION_STATUSES)}: {status!r}")
        path = f"/conversations/{conversation_id}/toggle_status"
        body = self._call("POST", path, token=self._bot_token, json_body={"status": status})
        return _dict(body, f"POST {path}")

    # ----------------------------------------------------------------------------- messages

    def list_messages(
        self, conversation_id: int, *, after: int | None = None, before: int | None = None
    ) -> list[JSONDict]:
        """Messages oldest first: the latest 20, 20 before `before`, or up to 100 after `after`."""
        path = f"/conversations/{conversation_id}/messages"
        params: dict[str, int] = {}
        if after is not None:
            params["after"] = after
        if before is not None:
            params["before"] = before
        body = self._call("GET", path, token=self._api_token, params=params or None)
        return _list_of_dicts(_field(body, "payload"), f"GET {path}")

    def send_message(
        self,
        conversation_id: int,
        content: str,
        *,
        private: bool = False,
        content_attributes: Mapping[str, Any] | None = None,
        echo_id: str | None = None,
    ) -> JSONDict:
        """Post an outgoing message (a private note when `private`); returns `<message>`.

        `message_type` is sent as the string "outgoing": Chatwoot compares strings, and an integer
        1 would make the contact the sender.
        """
        path = f"/conversations/{conversation_id}/messages"
        request: JSONDict = {"content": content, "message_type": "outgoing", "private": private}
        if content_attributes is not None:
            request["content_attributes"] = dict(content_attributes)
        _put_if_set(request, "echo_id", echo_id)
        body = self._call("POST", path, token=self._bot_token, json_body=request)
        return _dict(body, f"POST {path}")

    def find_message_with_marker(
        self,
        conversation_id: int,
        key: str,
        value: str,
        *,
        include_private: bool = True,
        pages_back: int = 5,
    ) -> JSONDict | None:
        """The newest message whose `content_attributes[key] == value`, or None.

        Looks at the latest 20 messages, then up to `pages_back` older pages of 20. This is how a
        retried send finds the reply an earlier attempt already posted.
        """
        before: int | None = None
        for _ in range(pages_back + 1):
            page = self.list_messages(conversation_id, before=before)
            for message in reversed(page):
                if not include_private and message.get("private"):
                    continue
                attributes = message.get("content_attributes")
                if isinstance(attributes, dict) and attributes.get(key) == value:
                    return message
            ids = [m["id"] for m in page if isinstance(m.get("id"), int)]
            if (
                len(page) < MESSAGES_PAGE_SIZE
                or not ids
                or (before is not None and min(ids) >= before)
            ):
                return None
            before = min(ids)
        return None

    # ------------------------------------------------------------------------------- doctor

    def ping(self) -> None:
        """A cheap authenticated call with the user token; raises the mapped error on failure."""
        self._call("GET", "/contacts/search", token=self._api_token, params={"q": "__doctor__"})

    # -------------------------------------------------------------------------------- HTTP

    def _call(
        self,
        method: str,
        path: str,
        *,
        token: str,
        params: Mapping[str, str | int] | None = None,
        json_body: JSONDict | None = None,
    ) -> Any:
        """One request; returns the decoded JSON body or raises a `ChatwootError`."""
        where = f"{method} {path}"
        headers = {"api_access_token": token, "Accept": "application/json"}
        body = None
        if json_body is not None:
            body = json.dumps(json_body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        query = f"?{urlencode(params)}" if params else ""
        started = time.perf_counter()
        try:
            response = self._http.request(
                method, self._account_path + path + query, body=body, headers=headers
            )
        except HttpFailure as exc:
            if exc.timed_out:
                logger.warning("chatwoot %s timed out (%s)", where, exc)
                raise ChatwootUnavailable(f"Chatwoot {where}: timed out ({exc})") from None
            logger.warning("chatwoot %s connection failed (%s)", where, exc)
            raise ChatwootUnavailable(
                f"Chatwoot {where}: connection failed ({self._safe_text(str(exc))})"
            ) from None
        elapsed_ms = (time.perf_counter() - started) * 1000
        logger.debug("chatwoot %s -> %s in %.0f ms", where, response.status, elapsed_ms)

        if response.is_success:
            try:
                return json.loads(response.body)
            except ValueError:
                logger.warning("chatwoot %s -> %s with a non-JSON body", where, response.status)
                raise ChatwootUnavailable(
                    f"Chatwoot {where} -> {response.status}: expected JSON, got "
                    f"{response.headers.get('content-type') or 'no content type'}",
                    status=response.status,
                ) from None

        error = self._error_for(where, response)
        logger.warning(
            "chatwoot %s -> %s (%s, retryable=%s, retry_after=%s)",
            where,
            response.status,
            type(error).__name__,
            error.retryable,
            error.retry_after,
        )
        raise error

    def _error_for(self, where: str, response: HttpReply) -> ChatwootError:
        status = response.status
        text, attributes = _error_details(response)
        message = f"Chatwoot {where} -> {status}: {self._safe_text(text)}"
        if status == 401:
            return ChatwootAuthError(message)
        if status == 404:
            return ChatwootNotFound(message)
        if status == 422:
            if MESSAGE_FLOOD_TEXT in text.lower():
                return ChatwootValidationError(
                    message,
                    attributes=attributes,
                    retryable=True,
                    retry_after=MESSAGE_FLOOD_RETRY_AFTER_S,
                )
            return ChatwootValidationError(message, attributes=attributes)
        if status == 429:
            return ChatwootRateLimited(message, retry_after=_retry_after(response))
        if status >= 500:
            return ChatwootUnavailable(message, status=status, retry_after=_retry_after(response))
        return ChatwootError(message, status=status, retryable=False)

    def _safe_text(self, text: str) -> str:
        """`text` shortened to `MAX_ERROR_TEXT` with any of our tokens blanked out."""
        for secret in self._secrets:
            text = text.replace(secret, "[token]")
        text = " ".join(text.split())
        if len(text) > MAX_ERROR_TEXT:
            text = text[: MAX_ERROR_TEXT - 1] + "…"
        return text


def _error_details(response: HttpReply) -> tuple[str, list[str]]:
    """Chatwoot's error text (`error` or `message`) and validation `attributes`, if any."""
    raw = response.text
    try:
        body = json.loads(raw)
    except ValueError:
        return raw.strip() or response.reason, []
    if not isinstance(body, dict):
        return raw.strip(), []
    # `error` (most errors), `message` (validation), `errors` (devise: no token sent at all).
    errors = body.get("errors")
    joined = "; ".join(str(e) for e in errors) if isinstance(errors, list) else None
    text = body.get("error") or body.get("message") or joined or raw
    attributes = body.get("attributes")
    names = [str(a) for a in attributes] if isinstance(attributes, list) else []
    return str(text).strip(), names


def _retry_after(response: HttpReply) -> float | None:
    """`Retry-After` as seconds from now: delta-seconds or an HTTP-date; None if absent or bad."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _put_if_set(request: JSONDict, key: str, value: object) -> None:
    if value is not None:
        request[key] = value


def _field(body: Any, key: str) -> Any:
    return body.get(key) if isinstance(body, dict) else None


def _dict(value: Any, where: str) -> JSONDict:
    if not isinstance(value, dict):
        raise ChatwootError(f"Chatwoot {where}: unexpected response shape (expected an object)")
    return value


def _list_of_dicts(value: Any, where: str) -> list[JSONDict]:
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ChatwootError(f"Chatwoot {where}: unexpected response shape (expected a list)")
    return value
