"""The reply-job ledger's vocabulary: one job per inbound customer message or greeting.

The ledger, not the queue, is the source of truth (Huey's dequeue is destructive): every job
has a state, and a job in `running` holds a lease that a reaper can take back.

    queued ──prepare──▶ waiting ──claim──▶ running ──▶ sent | handed_off | failed
       │                   │                  │
       └────────┬──────────┘                  └── retry ──▶ waiting (attempts < 3)
                ▼
    merged (answered by a newer job of the same burst) | skipped (a human has the
    conversation) | cancelled (an operator or a rollback)

Messages routed to n8n are in the ledger too (dedupe, traffic share): forwarding ──▶ forwarded,
or back to queued for the new pipeline when n8n cannot take them. A rollback moves unsent new-
pipeline jobs to cancelled ──▶ forwarded the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class JobKind(StrEnum):
    REPLY = "reply"
    GREETING = "greeting"
    SHADOW = "shadow"  # a reply written for comparison with n8n's, never sent


class JobState(StrEnum):
    QUEUED = "queued"
    WAITING = "waiting"
    RUNNING = "running"
    SENT = "sent"
    HANDED_OFF = "handed_off"
    MERGED = "merged"
    SKIPPED = "skipped"
    FAILED = "failed"
    CANCELLED = "cancelled"
    RECORDED = "recorded"  # a shadow reply, stored for comparison, never sent
    FORWARDING = "forwarding"  # routed to n8n, being handed over
    FORWARDED = "forwarded"  # n8n accepted it and answers it

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {
        JobState.SENT,
        JobState.HANDED_OFF,
        JobState.MERGED,
        JobState.SKIPPED,
        JobState.FAILED,
        JobState.CANCELLED,
        JobState.RECORDED,
        JobState.FORWARDED,
    }
)
UNSENT_STATES = frozenset({JobState.QUEUED, JobState.WAITING})

MAX_ATTEMPTS = 3  # attempts at a real reply
MAX_HANDOFF_ATTEMPTS = 10  # after those: attempts at getting the apology and handoff through
FIRST_RETRY_DELAY_S = 2.0
MAX_RETRY_DELAY_S = 60.0


def retry_delay_s(attempt: int, retry_after_s: float | None = None) -> float:
    """Exponential backoff after failed attempt number `attempt` (1-based): 2 s, 4 s, ... 60 s.

    A server's Retry-After wins when it asks for longer.
    """
    backoff = min(FIRST_RETRY_DELAY_S * (1 << max(0, attempt - 1)), MAX_RETRY_DELAY_S)
    return max(backoff, retry_after_s or 0.0)


@dataclass(frozen=True)
class ReplyJob:
    id: str
    seq: int
    kind: JobKind
    conversation_id: int
    state: JobState
    attempts: int
    inbound_message_id: int | None
    inbound_content: str | None
    delivery_id: str | None
    broker_id: str | None
    capacity_held: bool
    merged_into: str | None
    lease_owner: str | None
    lease_expires_at: float | None
    delay_s: float | None
    due_at: float | None
    escalation_reason: str | None
    received_at: float
    started_at: float | None
    send_started_at: float | None
    finished_at: float | None
    reply_text: str | None
    reply_message_id: int | None
    used_fallback: bool
    fallback_reason: str | None
    error: str | None
    updated_at: float
    route: str = "new"
    route_reason: str | None = None
    inbound_payload: str | None = None
    comparison_id: int | None = None
    inbound_headers: Mapping[str, str] | None = None  # Chatwoot's, kept to re-forward to n8n

    @property
    def reply_latency_s(self) -> float | None:
        if self.finished_at is None or self.reply_message_id is None:
            return None
        return self.finished_at - self.received_at
