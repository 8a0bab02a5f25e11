"""The n8n port: hand a webhook body to the legacy workflow and say whether it took it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ForwardResult:
    accepted: bool
    status: int | None
    latency_ms: float
    error: str | None = None


class N8nWorkflow(Protocol):
    def forward(self, body: bytes, headers: Mapping[str, str]) -> ForwardResult:
        """Accepted only when the workflow took the message; never raises."""
        ...
