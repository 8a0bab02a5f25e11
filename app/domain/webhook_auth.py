"""Is this webhook from our Chatwoot? (docs/chatwoot-contract.md §2)

Chatwoot ≥ 4.11.2 signs `"<timestamp>.<raw body>"` with HMAC-SHA256 and the webhook's (or agent
bot's) secret. We verify against the raw bytes, reject timestamps more than 5 minutes away (Chatwoot
itself adds no replay protection), and compare in constant time. Older Chatwoot signs nothing, so
a secret token in the URL (`?token=`) is the fallback.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

MAX_SKEW_S = 300.0
MAX_TIMESTAMP_DIGITS = 12


@dataclass(frozen=True)
class WebhookAuth:
    secret: str | None
    token: str | None
    allow_unauthenticated: bool = False
    max_skew_s: float = MAX_SKEW_S

    def rejection(
        self,
        *,
        body: bytes,
        timestamp: str | None,
        signature: str | None,
        url_token: str | None,
        now: float,
    ) -> str | None:
        """None when the request is authentic, else a short reason (safe to return)."""
        if self.secret:
            return self._signature_rejection(body, timestamp, signature, now)
        if self.token:
            if url_token and hmac.compare_digest(url_token.encode(), self.token.encode()):
                return None
            return "missing or wrong token"
        return None if self.allow_unauthenticated else "webhook authentication is not configured"

    def _signature_rejection(
        self, body: bytes, timestamp: str | None, signature: str | None, now: float
    ) -> str | None:
        if not timestamp or not signature:
            return "missing signature"
        # Unix seconds: digits only, and few enough that the skew check cannot overflow.
        if (
            not (timestamp.isascii() and timestamp.isdigit())
            or len(timestamp) > MAX_TIMESTAMP_DIGITS
        ):
            return "malformed timestamp"
        sent_at = int(timestamp)
        if abs(now - sent_at) > self.max_skew_s:
            return "timestamp outside the 300 s window"
        assert self.secret is not None
        expected = "sha256=" + sign(self.secret, timestamp, body)
        if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
            return "signature mismatch"
        return None


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """Chatwoot's signature hex digest for a body sent at `timestamp`."""
    message = timestamp.encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
