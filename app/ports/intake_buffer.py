"""The intake buffer port: where receivers leave customer messages for the workers to record
(Redis in production, app/adapters/redis_intake.py), and what an operator does with the ones a
worker parked."""

from __future__ import annotations

from typing import Protocol

from app.domain.intake_entry import BufferedInbound, PushOutcome


class IntakeBufferError(Exception):
    """The buffer failed an operator's request; the message says what happened."""


class IntakeBuffer(Protocol):
    def push(self, entry: BufferedInbound) -> PushOutcome:
        """Deduplicated on the delivery and message ids. Raises IntakeBufferError when the buffer
        cannot take it (the caller records the message in the ledger instead)."""
        ...


class ParkedIntake(Protocol):
    def replay_rejected(self) -> int:
        """Every parked entry back in the buffer; how many moved. Raises IntakeBufferError."""
        ...
