"""Records the store returns, shared by every store backend."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from app.domain.jobs import ReplyJob


class ConversationStatus(StrEnum):
    BOT = "bot"  # the AI broker answers
    HANDED_OFF = "handed_off"  # the broker asked for a human
    HUMAN = "human"  # a human replied, was assigned, or opened the conversation


@dataclass(frozen=True)
class Broker:
    id: str
    name: str
    persona_type: str
    title: str
    specialty: str
    is_active: bool
    current_workload: int
    max_concurrent_chats: int
    total_conversations: int
    messages_handled: int
    handoffs: int

    @property
    def at_capacity(self) -> bool:
        return self.current_workload >= self.max_concurrent_chats


@dataclass(frozen=True)
class BrokerConversation:
    conversation_id: int
    broker_id: str
    contact_id: int | None
    lead_score: int | None
    lead_profile: dict[str, object] | None
    status: ConversationStatus
    message_count: int
    handoff_reason: str | None
    greeting_job_id: str | None
    last_customer_message_at: float | None
    last_reply_at: float | None
    assigned_at: float


class InboundStatus(StrEnum):
    RECORDED = "recorded"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"


@dataclass(frozen=True)
class InboundOutcome:
    status: InboundStatus
    reason: str
    job: ReplyJob | None = None


class ClaimStatus(StrEnum):
    CLAIMED = "claimed"
    DEFERRED = "deferred"  # merged into a newer message of the same burst
    NOT_CLAIMABLE = "not_claimable"


NOT_DUE = "not_due"  # Claim.reason when the job's delay has not passed yet
PAUSED = "paused"  # Claim.reason while reply processing is paused


@dataclass(frozen=True)
class Claim:
    status: ClaimStatus
    job: ReplyJob | None
    batch: tuple[ReplyJob, ...] = ()
    reason: str = ""
    conversation: BrokerConversation | None = None  # read in the same transaction as the claim


class SendGate(StrEnum):
    GO = "go"  # stamped: post now
    WAIT = "wait"  # the global send rate is used up: try again after wait_s
    LOST = "lost"  # the job is no longer this worker's
    NOT_BOT = "not_bot"  # a human has the conversation now: the job was skipped


@dataclass(frozen=True)
class SendStart:
    """The last check before posting a reply, and the send stamp, in one transaction."""

    gate: SendGate
    job: ReplyJob | None = None  # GO: the job as it was before the stamp (an earlier attempt?)
    wait_s: float = 0.0
    reason: str = ""


class ReapAction(StrEnum):
    PREPARE = "prepare"
    RESPOND = "respond"


@dataclass(frozen=True)
class ReapedJob:
    job_id: str
    action: ReapAction
    due_at: float | None


@dataclass(frozen=True)
class WorkerHeartbeat:
    worker_id: str
    hostname: str
    pid: int
    concurrency: int
    started_at: float
    seen_at: float


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: float
    actor: str
    action: str
    before: dict[str, object]
    after: dict[str, object]
    reason: str
    automatic: bool
    detail: dict[str, object] | None


class Verdict(StrEnum):
    BETTER = "better"  # the new pipeline's reply is better than n8n's
    SAME = "same"
    WORSE = "worse"


@dataclass(frozen=True)
class Comparison:
    id: int
    conversation_id: int
    inbound_message_id: int
    customer_message: str
    received_at: float
    broker_id: str | None
    shadow_reply: str | None
    shadow_latency_ms: float | None
    shadow_used_fallback: bool | None
    n8n_reply: str | None
    n8n_latency_ms: float | None
    n8n_source: str | None
    similarity: float | None
    verdict: Verdict | None
    verdict_note: str | None
    verdict_by: str | None
    verdict_at: float | None


@dataclass(frozen=True)
class ReplyWindowStats:
    """The new pipeline's replies that finished inside a window (for the guard and status)."""

    finished: int
    failed: int
    sent: int
    fallbacks: int
    p50_s: float | None  # nearest-rank percentiles of message -> reply, computed by the store
    p95_s: float | None
    backlog: int


@dataclass(frozen=True)
class LatencyHistogram:
    """Replies sent inside a window by latency: cumulative counts per upper bound (Prometheus'
    histogram buckets), computed by the store so /metrics never loads every latency."""

    bounds_s: tuple[float, ...]
    cumulative: tuple[int, ...]
    count: int
    sum_s: float


DAY_S = 86400.0


@dataclass(frozen=True)
class Retention:
    """How long the store keeps what (prune runs from the worker's maintenance loop)."""

    deliveries_s: float = DAY_S  # delivery ids: agent-bot retries come within seconds
    heartbeats_s: float = DAY_S
    payloads_s: float = DAY_S  # raw webhook bodies of finished jobs
    jobs_s: float = 30 * DAY_S  # the ledger
    comparisons_s: float = 90 * DAY_S  # shadow comparisons and verdicts


DEFAULT_RETENTION = Retention()
