"""Chatwoot on the wire: webhook bodies, signatures and headers, Rails' times, API error answers."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any


def encode_webhook_body(payload: dict[str, Any]) -> bytes:
    """`payload.to_json` as ActiveSupport writes it: compact, UTF-8, HTML-unsafe chars escaped.

    Receivers must HMAC these exact bytes, so they are produced once per event and reused.
    """
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escaped)
    return text.encode()


def sign_webhook(secret: str, timestamp: int | str, body: bytes) -> str:
    """The `X-Chatwoot-Signature` value: `sha256=` + hex HMAC-SHA256 of `"<ts>." + body`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def webhook_headers(
    delivery_id: str, body: bytes, secret: str | None, timestamp: int
) -> dict[str, str]:
    """Headers of one delivery attempt (`lib/webhooks/trigger.rb#request_headers`)."""
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "X-Chatwoot-Delivery": delivery_id,
    }
    if secret:
        headers["X-Chatwoot-Timestamp"] = str(timestamp)
        headers["X-Chatwoot-Signature"] = sign_webhook(secret, timestamp, body)
    return headers


def iso(ts: float) -> str:
    """Rails' JSON time: UTC, milliseconds, `Z`."""
    moment = datetime.fromtimestamp(ts, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def iso_or_none(ts: float | None) -> str | None:
    return None if ts is None else iso(ts)


def epoch(ts: float | None) -> int:
    return 0 if ts is None else int(ts)


class ChatwootApiError(Exception):
    """An error answer of the Chatwoot API: raised by the operations, rendered by the routes."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"{status} {body}")
        self.status = status
        self.body = body


def unprocessable(message: str) -> ChatwootApiError:
    return ChatwootApiError(422, {"error": message})
