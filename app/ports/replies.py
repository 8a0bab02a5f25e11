"""The reply generator port: a broker's reply from the configured model, never an exception.

Any model problem yields the caller's fallback text, with a stable reason code, so the pipeline
always has something to send.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from app.domain.conversation import ChatTurn


@dataclass(frozen=True)
class GeneratedReply:
    """What the broker will say. `fallback_reason` is a stable code when `used_fallback`."""

    text: str
    used_fallback: bool
    fallback_reason: str | None
    latency_ms: float
    model: str


class ReplyGenerator(Protocol):
    def generate(
        self,
        *,
        system_prompt: str,
        history: Sequence[ChatTurn],
        customer_messages: Sequence[str],
        fallback_text: str,
    ) -> GeneratedReply: ...
