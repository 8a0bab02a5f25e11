"""The legacy n8n workflow's webhook: we hand it what Chatwoot sent, unchanged.

The body goes as the original bytes, with Chatwoot's own headers (its signature, timestamp and
delivery id, so a workflow that checks the signature accepts it), on the first forward and on
every re-forward after a rollback. n8n's answer to the webhook is only its acknowledgement
("Workflow was started" when the webhook node responds immediately, as the legacy workflow's
does): its reply is the message it posts to Chatwoot, which comes back to us as a webhook from
its sender (N8N_SENDER). A short timeout keeps the webhook path fast.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import httpx

from app.domain.forwarding import forwarded_headers
from app.ports.n8n import ForwardResult

log = logging.getLogger(__name__)

# While it starts, n8n answers every webhook 200 with this page before any workflow runs.
STARTING_UP_MARKER = "n8n is starting up"


class N8nClient:
    """The n8n port (app/ports/n8n.py) over HTTP."""

    def __init__(self, http: httpx.Client, *, url: str) -> None:
        self._http = http
        self._url = url

    def forward(self, body: bytes, headers: Mapping[str, str]) -> ForwardResult:
        """POST the webhook body as Chatwoot sent it. Accepted only when the workflow took it:
        a 2xx that is not n8n's start-up page (a 404 means the workflow is not registered or
        not active)."""
        started = time.perf_counter()
        forwarded = {"Content-Type": "application/json", **forwarded_headers(headers)}
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
        if STARTING_UP_MARKER in response.text[:2000]:
            log.warning("n8n is still starting up (%.0f ms): the message is not taken", latency)
            return ForwardResult(False, response.status_code, latency, error="starting_up")
        return ForwardResult(True, response.status_code, latency)

    def ping(self) -> None:
        """Any HTTP answer proves n8n is reachable (its webhook accepts only POST)."""
        self._http.head(self._url)
