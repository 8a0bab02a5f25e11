"""The store interface, as focused ports: brokers and conversations, the reply-job ledger,
rollout and audit, comparisons, circuits, and shared runtime state; `Store` is all of them.

SQLite implements it for the embedded default; the PostgreSQL store (over psycopg or
Supabase's REST API) implements the same contract (tests/integration/test_store_contract.py
runs against every backend). Every method that must be atomic across processes is one call
here, so a backend can make it one transaction or one database function.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from app.domain.circuit import Circuit
from app.domain.events import InboundMessage
from app.domain.jobs import JobState, ReplyJob
from app.domain.personas import BrokerPersona
from app.domain.reply_plan import ReplyPlan
from app.domain.rollout import RolloutState, Route
from app.store.models import (
    DEFAULT_RETENTION,
    AuditEntry,
    Broker,
    BrokerConversation,
    Claim,
    Comparison,
    ConversationStatus,
    InboundOutcome,
    LatencyHistogram,
    ReapedJob,
    ReplyWindowStats,
    Retention,
    SendStart,
    Verdict,
    WorkerHeartbeat,
)


class StoreError(RuntimeError):
    """The store could not complete an operation (unreachable, locked too long, ...)."""


class StoreLifecycle(Protocol):
    def init_schema(self) -> None: ...
    def ping(self) -> None: ...
    def close(self) -> None: ...


class BrokerDirectory(Protocol):
    """Brokers, their capacity, and each conversation's broker and status."""

    def seed_brokers(self, personas: Iterable[BrokerPersona], *, max_concurrent_chats: int) -> int:
        """Insert the personas that are absent; return how many were inserted."""
        ...

    def list_brokers(self) -> list[Broker]: ...

    def assign_broker(
        self,
        conversation_id: int,
        preferred_broker_id: str | None,
        *,
        contact_id: int | None = None,
        lead_score: int | None = None,
        lead_profile: Mapping[str, object] | None = None,
        now: float,
    ) -> BrokerConversation:
        """The conversation's broker: the existing assignment, else the preferred broker when
        it has capacity, else the least-loaded active broker (preferred one if all are full)."""
        ...

    def get_conversation(self, conversation_id: int) -> BrokerConversation | None: ...

    def hold_capacity(self, job_id: str, broker_id: str, *, now: float) -> bool:
        """Count the job in its broker's workload, once. False when the broker is full (or the
        job has already finished, so nothing would ever release the slot)."""
        ...

    def release_capacity(self, job_id: str, *, now: float) -> None:
        """Take the job out of its broker's workload, once; never below zero."""
        ...

    def set_conversation_status(
        self, conversation_id: int, status: ConversationStatus, reason: str, *, now: float
    ) -> list[str]:
        """Mark a conversation handed off or taken by a human; cancel its unsent reply jobs
        (state skipped, capacity released). Returns the skipped job ids."""
        ...

    def record_delivered_reply(
        self,
        conversation_id: int,
        broker_id: str,
        *,
        customer_messages: int,
        handoff_reason: str | None,
        now: float,
    ) -> None:
        """Metrics after a reply: message counts, and the handoff when there was one."""
        ...


class JobLedger(Protocol):
    """The reply-job ledger: admission, claims and leases, sending, the end of each job, the
    reaper, and the hand-over of unsent jobs to n8n."""

    def record_inbound(
        self,
        message: InboundMessage,
        *,
        delivery_id: str | None,
        now: float,
        route: Route = Route.NEW,
        route_reason: str | None = None,
        payload: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> InboundOutcome:
        """Atomically: dedupe on delivery id and message id, refuse conversations a human has,
        and create the job: queued for the new pipeline, forwarding for n8n. `payload` (the raw
        webhook body) and `headers` (Chatwoot's) are kept so the message can be handed to n8n
        later (rollback) exactly as it came."""
        ...

    def admit_inbound(
        self,
        message: InboundMessage,
        *,
        delivery_id: str | None,
        now: float,
        plan: ReplyPlan,
        route_reason: str | None = None,
        payload: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> InboundOutcome:
        """record_inbound for the new pipeline and schedule_job in one transaction: the
        outcome's job is waiting (due at due_at), queued (its broker is full) or skipped."""
        ...

    def schedule_job(self, job_id: str, *, plan: ReplyPlan, now: float) -> ReplyJob | None:
        """A queued job's broker (the conversation's, else assigned now), its capacity and its
        delay, at once: waiting and due after the delay; still queued when the broker is
        full; skipped when a human has the conversation. None if the job is not queued."""
        ...

    def create_greeting_job(self, conversation_id: int, broker_id: str, *, now: float) -> ReplyJob:
        """A greeting job (queued), remembered as the conversation's greeting."""
        ...

    def get_job(self, job_id: str) -> ReplyJob | None: ...

    def list_jobs(
        self,
        *,
        states: Iterable[JobState] | None = None,
        conversation_id: int | None = None,
        limit: int = 100,
    ) -> list[ReplyJob]: ...

    def prepare_job(
        self,
        job_id: str,
        *,
        broker_id: str,
        delay_s: float,
        escalation_reason: str | None,
        now: float,
    ) -> ReplyJob | None:
        """queued -> waiting, due after the human-like delay. None if the job is not queued."""
        ...

    def claim_job(
        self, job_id: str, *, owner: str, lease_s: float, coalesce_window_s: float, now: float
    ) -> Claim:
        """Atomically take a due job for sending (waiting past its due_at, or running with an
        expired lease); a waiting job that is not due yet is NOT_CLAIMABLE with reason NOT_DUE,
        and nothing is claimable while the queue is paused (reason PAUSED). The claim carries
        the conversation's row as it is now.

        Burst rule: if a newer customer message of the same conversation is still unsent and
        this one is younger than `coalesce_window_s`, this job is merged into the newest one
        (DEFERRED). Otherwise older unsent messages of the conversation are merged into this
        job, and the batch lists every message the reply must answer."""
        ...

    def renew_lease(self, job_id: str, *, owner: str, lease_s: float, now: float) -> bool: ...

    def begin_send(self, job_id: str, *, owner: str, now: float) -> ReplyJob | None:
        """Last check before posting: the job is still ours and running. Stamps send_started_at
        and returns the job as it was before (so a re-run can see an earlier send attempt)."""
        ...

    def start_send(self, job_id: str, *, owner: str, rate_per_s: float, now: float) -> SendStart:
        """Before posting: the job is still ours, the conversation still the bot's (else the
        job is skipped), a slot under the global send rate is free (else wait), and then the
        send stamp (begin_send) — one transaction."""
        ...

    def complete_job(
        self,
        job_id: str,
        *,
        owner: str,
        state: JobState,
        now: float,
        broker_id: str,
        customer_messages: int,
        handoff_reason: str | None = None,
        reply_text: str | None = None,
        reply_message_id: int | None = None,
        used_fallback: bool = False,
        fallback_reason: str | None = None,
        error: str | None = None,
        error_detail: str | None = None,
    ) -> bool:
        """After a reply reached the customer: finish_job, record_delivered_reply and, with a
        handoff reason, the conversation handed off — one transaction. False if not ours."""
        ...

    def finish_job(
        self,
        job_id: str,
        *,
        owner: str | None,
        state: JobState,
        now: float,
        reply_text: str | None = None,
        reply_message_id: int | None = None,
        used_fallback: bool = False,
        fallback_reason: str | None = None,
        error: str | None = None,
        error_detail: str | None = None,
    ) -> bool:
        """Move a job to a terminal state and release its capacity. False if not ours."""
        ...

    def retry_job(
        self,
        job_id: str,
        *,
        owner: str,
        due_at: float,
        error: str,
        error_detail: str | None,
        now: float,
        min_attempts: int = 0,
    ) -> bool:
        """running -> waiting for another attempt at `due_at`. False if not ours.
        `min_attempts` raises the attempt count (a job giving up stays giving up)."""
        ...

    def hand_back(self, *, owner_prefix: str, now: float) -> list[str]:
        """A worker shutting down returns its running jobs: waiting, due now, no lease."""
        ...

    def reap(self, *, now: float, stale_after_s: float, limit: int = 500) -> list[ReapedJob]:
        """Jobs whose Huey task was lost: running with an expired lease, or queued/waiting and
        overdue by `stale_after_s`; and messages stuck in forwarding (the receiver died before
        n8n answered), which move to the new pipeline. Each is touched so only one reaper
        re-enqueues it."""
        ...

    def forward_outcome(
        self, job_id: str, *, accepted: bool, reason: str, now: float
    ) -> ReplyJob | None:
        """A forwarding or cancelled job: forwarded when n8n accepted it, else back to queued
        for the new pipeline (which then answers it). None if the job was in another state."""
        ...

    def mark_n8n_answered(self, conversation_id: int, *, at: float) -> int:
        """n8n replied in the conversation at `at`: its forwarded messages received by then are
        answered. Returns how many."""
        ...

    def requeue_silent_forwards(
        self, *, now: float, silent_after_s: float, horizon_s: float, limit: int = 200
    ) -> list[ReplyJob]:
        """Messages n8n took more than `silent_after_s` ago (and less than that plus
        `horizon_s`) without a reply seen since: back to queued for the new pipeline, route
        reason `n8n_silent`, their comparison's n8n source `silent`."""
        ...

    def cancel_unsent_replies(self, *, reason: str, now: float) -> list[ReplyJob]:
        """Cancel every new-pipeline reply that has not started sending (rollback)."""
        ...

    def cancel_job(self, job_id: str, *, reason: str, now: float) -> bool: ...

    def requeue_job(self, job_id: str, *, now: float) -> ReplyJob | None:
        """A failed or cancelled job back to queued with fresh attempts (operator retry)."""
        ...


class RolloutRecords(Protocol):
    """The live rollout state and its audit trail."""

    def get_rollout(self, *, initial: RolloutState) -> RolloutState:
        """The live rollout; `initial` (from the environment) is stored on first use."""
        ...

    def save_rollout(
        self,
        state: RolloutState,
        *,
        expected: RolloutState,
        action: str,
        reason: str,
        automatic: bool,
        detail: Mapping[str, object] | None = None,
    ) -> bool:
        """Compare-and-set on `expected.updated_at`, with the audit row in the same transaction.
        False if someone else changed the rollout first (re-read and retry)."""
        ...

    def audit_log(self, *, limit: int = 100) -> list[AuditEntry]: ...


class ComparisonRecords(Protocol):
    """Shadow comparisons: the new pipeline's reply beside n8n's, and the operators' verdicts."""

    def create_shadow(self, message: InboundMessage, *, now: float) -> ReplyJob | None:
        """A comparison row and its shadow job, once per customer message."""
        ...

    def record_shadow_reply(
        self,
        comparison_id: int,
        *,
        reply: str,
        latency_ms: float,
        used_fallback: bool,
        broker_id: str,
    ) -> None: ...

    def record_n8n_reply(
        self,
        conversation_id: int,
        *,
        reply: str,
        at: float,
        source: str,
        inbound_message_id: int | None = None,
    ) -> Comparison | None:
        """Pair n8n's reply with the comparison of that message (or the conversation's latest
        one still waiting for it); the similarity is scored once both replies are in."""
        ...

    def set_verdict(
        self, comparison_id: int, verdict: Verdict, *, note: str, actor: str, now: float
    ) -> bool: ...
    def get_comparison(self, comparison_id: int) -> Comparison | None: ...
    def list_comparisons(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        broker_id: str | None = None,
        max_similarity: float | None = None,
        unrated: bool = False,
        conversation_id: int | None = None,
        limit: int = 200,
    ) -> list[Comparison]: ...


class CircuitRecords(Protocol):
    """Circuit breakers shared by every process (n8n's)."""

    def get_circuit(self, name: str) -> Circuit: ...
    def swap_circuit(self, name: str, *, expected_version: int, circuit: Circuit) -> bool:
        """Compare-and-set on the version; the new row gets version expected + 1."""
        ...


class RuntimeState(Protocol):
    """What the processes share at run time: the send rate, heartbeats, counters, the health
    figures the guard and /metrics read, and housekeeping."""

    def reply_window_stats(
        self, *, since: float, now: float, overdue_s: float = 30.0
    ) -> ReplyWindowStats: ...

    def acquire_send_slot(self, rate_per_s: float, *, now: float) -> float:
        """Take a send slot under the global rate; returns 0, or seconds to wait and retry."""
        ...

    def heartbeat(self, beat: WorkerHeartbeat) -> None: ...
    def live_workers(self, *, since: float) -> list[WorkerHeartbeat]: ...
    def count(self, name: str, label: str, amount: int = 1) -> None: ...
    def counters(self, name: str) -> dict[str, int]: ...
    def job_state_counts(self) -> dict[str, int]: ...
    def reply_latency_histogram(
        self, *, since: float, bounds_s: Sequence[float]
    ) -> LatencyHistogram: ...
    def prune(self, *, now: float, retention: Retention = DEFAULT_RETENTION) -> int:
        """Drop what has outlived its use: old delivery ids, heartbeats, finished jobs (after
        clearing their raw webhook bodies sooner) and old comparisons, in bounded batches (no
        long transaction); returns the rows changed."""
        ...


class Store(
    StoreLifecycle,
    BrokerDirectory,
    JobLedger,
    RolloutRecords,
    ComparisonRecords,
    CircuitRecords,
    RuntimeState,
    Protocol,
):
    """Every port at once: what a backend implements, and what the composition root hands to
    services that use several. A service that needs one concern takes that port."""
