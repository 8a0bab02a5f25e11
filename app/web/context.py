"""Access to the wired services from inside a request."""

from __future__ import annotations

from typing import Any

from flask import current_app, request

from app.bootstrap import Services
from app.web.json_body import JsonRejected, parse_json


class BadRequestBody(Exception):
    """The request body is not what the route accepts; `status` and `error` go to the client."""

    def __init__(self, status: int, error: str, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.field = field


def services() -> Services:
    wired = current_app.extensions["ai_broker"]
    assert isinstance(wired, Services)
    return wired


def raw_json_body() -> tuple[bytes, dict[str, Any]]:
    """The raw bytes (for signatures) and the parsed JSON object of this request."""
    if request.mimetype != "application/json":
        raise BadRequestBody(415, "unsupported_media_type", "send Content-Type: application/json")
    raw = request.get_data(cache=True)
    try:
        parsed = parse_json(raw)
    except JsonRejected as exc:
        raise BadRequestBody(400, exc.error, exc.message, field=exc.field) from None
    except (ValueError, UnicodeDecodeError):
        raise BadRequestBody(400, "invalid_json", "the body is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise BadRequestBody(400, "invalid_body", "the body must be a JSON object") from None
    return raw, parsed
