"""The legacy n8n workflow's webhook: we hand it the original Chatwoot payload, unchanged.

The workflow may answer with its reply in the response body (a "Respond to Webhook" node); we read
it when it is there, for the shadow comparison. A short timeout keeps the webhook path fast.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

log = logging.getLogger(__name__)

REPLY_KEYS = ("reply", "output", "text", "message", "content", "response")
FORWARDED_HEADERS = ("X-Chatwoot-Delivery", "X-Chatwoot-Timestamp", "X-Chatwoot-Signature")


@dataclass(frozen=True)
class ForwardResult:
    accepted: bool
    status: int | None
    latency_ms: float
    reply_text: str | None = None
    error: str | None = None


class N8nClient:
    def __init__(self, http: httpx.Client, *, url: str) -> None:
        self._http = http
        self._url = url

    def forward(self, body: bytes, headers: Mapping[str, str]) -> ForwardResult:
        """POST the webhook body as Chatwoot sent it. Any 2xx means n8n took the message."""
        started = time.perf_counter()
        forwarded = {"Content-Type": "application/json"}
        forwarded.update({k: v for k, v in headers.items() if k in FORWARDED_HEADERS})
        try:
            response = self._http.post(self._url, content=body, headers=forwarded)
        except httpx.HTTPError as exc:
            latency = (time.perf_counter() - started) * 1000
            log.warning("n8n forward failed after %.0f ms: %s", latency, type(exc).__name__)
            return ForwardResult(False, None, latency, error=type(exc).__name__)
        latency = (time.perf_counter() - started) * 1000
        if not response.is_success:
            log.warning("n8n answered %s after %.0f ms", response.status_code, latency)
            return ForwardResult(False, response.status_code, latency, error="http_error")
        return ForwardResult(True, response.status_code, latency, _reply_text(response))

    def ping(self) -> None:
        """Any HTTP answer proves n8n is reachable (its webhook accepts only POST)."""
        self._http.head(self._url)


def _reply_text(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except (json.JSONDecodeError, ValueError):
        return None
    if isinstance(body, list) and body:
        body = body[0]
    if not isinstance(body, Mapping):
        return None
    for key in REPLY_KEYS:
        value = body.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None
