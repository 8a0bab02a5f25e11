"""A customer message a receiver accepted into the intake buffer, as the workers read it back.

The encoding is the contract between receivers and workers of different versions during a
rolling deploy, so it carries a version and is read strictly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from app.domain.events import InboundMessage

ENTRY_VERSION = 1


class PushOutcome(StrEnum):
    ACCEPTED = "accepted"
    DELIVERY_ALREADY_RECEIVED = "delivery_already_received"
    MESSAGE_ALREADY_RECEIVED = "message_already_received"


@dataclass(frozen=True)
class BufferedInbound:
    """A customer message accepted by a receiver and not yet in the ledger. `headers` are the
    `X-Chatwoot-*` headers, kept so a message re-routed to n8n is forwarded as Chatwoot sent it."""

    message: InboundMessage
    delivery_id: str | None
    received_at: float
    payload: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        """A one-line JSON header, a newline, then the webhook body as received: the body is
        not escaped into the JSON, which would cost more than everything else the receiver
        does with it."""
        header = {
            "v": ENTRY_VERSION,
            "message": self.message.__dict__,
            "delivery_id": self.delivery_id,
            "received_at": self.received_at,
            "headers": dict(self.headers),
        }
        return json.dumps(header, separators=(",", ":")).encode() + b"\n" + self.payload

    @classmethod
    def decode(cls, raw: bytes) -> BufferedInbound:
        """Raises ValueError for an entry this version cannot read."""
        head, newline, payload = raw.partition(b"\n")
        try:
            data: dict[str, Any] = json.loads(head)
            if data.get("v") != ENTRY_VERSION or not newline:
                raise ValueError(f"intake entry version {data.get('v')!r}")
            return cls(
                message=InboundMessage(**data["message"]),
                delivery_id=data["delivery_id"],
                received_at=float(data["received_at"]),
                payload=payload,
                headers=data.get("headers") or {},
            )
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"unreadable intake entry: {exc}") from exc
