"""The PostgreSQL store: every Store method is one call of one `ai_broker_*` function.

The functions (app/store/migrations) hold every rule: atomic capacity, the burst rule, claims,
leases, the reaper. This class only names the call and turns the JSON that comes back into the
domain's records, so the same class serves both transports (app/store/rpc.py): psycopg on
`DATABASE_URL` and supabase-py on Supabase's REST API. Times are epoch seconds (double
precision) as in the SQLite store, so every backend returns identical records and passes the
same contract (tests/integration/test_store_contract.py).

Leases, reaping and send windows run on the database's clock (`LeaseClock.DATABASE`, migration
0005): a lease one host writes and another judges compares one clock, so hosts need not agree
on the time. The `now` passed to those methods is then ignored; `LeaseClock.CALLER` uses it, as
the SQLite store does, for tests that drive time by hand.

The schema is not created here: `ai-broker db init` applies the migrations
(app/store/postgres_migrations.py) and `init_schema` checks the version.
"""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from app.domain.circuit import Circuit, CircuitPosition
from app.domain.events import InboundMessage
from app.domain.jobs import JobKind, JobState, ReplyJob
from app.domain.personas import BrokerPersona
from app.domain.reply_plan import ReplyPlan
from app.domain.rollout import RolloutState, Route
from app.domain.similarity import similarity
from app.store.base import StoreError
from app.store.codec import guard_from_json, rollout_to_dict
from app.store.models import (
    DEFAULT_RETENTION,
    AuditEntry,
    Broker,
    BrokerConversation,
    Claim,
    ClaimStatus,
    Comparison,
    ConversationStatus,
    InboundOutcome,
    InboundStatus,
    LatencyHistogram,
    ReapAction,
    ReapedJob,
    ReplyWindowStats,
    Retention,
    SendGate,
    SendStart,
    Verdict,
    WorkerHeartbeat,
)
from app.store.postgres_migrations import SCHEMA_VERSION
from app.store.rpc import Rpc

Row = dict[str, Any]
PRUNE_BATCH = 1000
PRUNE_MAX_BATCHES = 50  # per prune pass; the next pass (minutes later) goes on


class LeaseClock(enum.Enum):
    """Whose clock leases, reaping and send windows read."""

    DATABASE = "database"  # the database's, whatever `now` the caller passes
    CALLER = "caller"  # the `now` each method is given


class PostgresStore:
    def __init__(self, rpc: Rpc, *, lease_clock: LeaseClock = LeaseClock.DATABASE) -> None:
        self._rpc = rpc
        self._db_clock = lease_clock is LeaseClock.DATABASE

    def _call(self, function: str, params: Mapping[str, object] | None = None) -> Any:
        return self._rpc.call(function, params or {})

    def _call_at(self, function: str, params: Row, now: float) -> Any:
        """A lease function at `now`, or at the database's clock (its `_on_db_clock` form)."""
        if self._db_clock:
            return self._call(f"{function}_on_db_clock", params)
        return self._call(function, {**params, "p_now": now})

    @property
    def transport(self) -> Rpc:
        """The store's connection to its database (the analytics queries share it)."""
        return self._rpc

    # -- lifecycle ---------------------------------------------------------------------------
    def init_schema(self) -> None:
        """Check the schema: `ai-broker db init` applies the migrations."""
        self.ping()

    def ping(self) -> None:
        try:
            version = self._call("schema_version")
        except StoreError as exc:
            if "db init" in str(exc):
                raise StoreError(
                    f"the {self._rpc.describe()} schema is missing or older than this build "
                    f"(it needs {SCHEMA_VERSION}): run `ai-broker db init` to apply the migrations"
                ) from exc
            raise
        if version is None:
            raise StoreError(
                f"the {self._rpc.describe()} schema is missing: run `ai-broker db init`"
            )
        # A newer schema is fine: migrations only add, and a rolling deploy runs old builds
        # against the new schema for a while.
        if str(version) < SCHEMA_VERSION:
            raise StoreError(
                f"the {self._rpc.describe()} schema is at version {version} but this build "
                f"needs {SCHEMA_VERSION}: run `ai-broker db init` to apply the new migrations"
            )

    def close(self) -> None:
        self._rpc.close()

    # -- brokers and capacity ----------------------------------------------------------------
    def seed_brokers(self, personas: Iterable[BrokerPersona], *, max_concurrent_chats: int) -> int:
        brokers = [
            {
                "id": persona.slug,
                "name": persona.name,
                "persona_type": persona.type.value,
                "title": persona.title,
                "specialty": persona.specialty,
            }
            for persona in personas
        ]
        if not brokers:
            return 0
        return int(
            self._call(
                "seed_brokers",
                {
                    "p_brokers": brokers,
                    "p_max_concurrent_chats": max_concurrent_chats,
                    "p_now": time.time(),
                },
            )
        )

    def list_brokers(self) -> list[Broker]:
        return [_broker(row) for row in self._call("list_brokers")]

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
        row = self._call(
            "assign_broker",
            {
                "p_conversation_id": conversation_id,
                "p_preferred_broker_id": preferred_broker_id,
                "p_now": now,
                "p_contact_id": contact_id,
                "p_lead_score": lead_score,
                "p_lead_profile": dict(lead_profile) if lead_profile is not None else None,
            },
        )
        return _conversation(row)

    def get_conversation(self, conversation_id: int) -> BrokerConversation | None:
        row = self._call("get_conversation", {"p_conversation_id": conversation_id})
        return _conversation(row) if row else None

    def hold_capacity(self, job_id: str, broker_id: str, *, now: float) -> bool:
        return bool(
            self._call(
                "hold_capacity", {"p_job_id": job_id, "p_broker_id": broker_id, "p_now": now}
            )
        )

    def release_capacity(self, job_id: str, *, now: float) -> None:
        self._call("release_capacity", {"p_job_id": job_id, "p_now": now})

    def set_conversation_status(
        self, conversation_id: int, status: ConversationStatus, reason: str, *, now: float
    ) -> list[str]:
        skipped = self._call(
            "set_conversation_status",
            {
                "p_conversation_id": conversation_id,
                "p_status": status.value,
                "p_reason": reason,
                "p_now": now,
            },
        )
        return [str(job_id) for job_id in skipped or ()]

    def record_delivered_reply(
        self,
        conversation_id: int,
        broker_id: str,
        *,
        customer_messages: int,
        handoff_reason: str | None,
        now: float,
    ) -> None:
        self._call(
            "record_delivered_reply",
            {
                "p_conversation_id": conversation_id,
                "p_broker_id": broker_id,
                "p_customer_messages": customer_messages,
                "p_handoff_reason": handoff_reason,
                "p_now": now,
            },
        )

    # -- the reply-job ledger ----------------------------------------------------------------
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
        outcome = self._call(
            "record_inbound",
            {
                "p_message_id": message.message_id,
                "p_conversation_id": message.conversation_id,
                "p_content": message.content,
                "p_delivery_id": delivery_id,
                "p_now": now,
                "p_route": route.value,
                "p_route_reason": route_reason,
                "p_payload": payload,
                "p_headers": None if headers is None else dict(headers),
            },
        )
        return _outcome(outcome)

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
        return _outcome(
            self._call(
                "admit_inbound",
                {
                    "p_message_id": message.message_id,
                    "p_conversation_id": message.conversation_id,
                    "p_content": message.content,
                    "p_delivery_id": delivery_id,
                    "p_now": now,
                    "p_delays": plan.to_json(),
                    "p_escalation_reason": plan.escalation_reason,
                    "p_route_reason": route_reason,
                    "p_payload": payload,
                    "p_headers": None if headers is None else dict(headers),
                },
            )
        )

    def schedule_job(self, job_id: str, *, plan: ReplyPlan, now: float) -> ReplyJob | None:
        row = self._call(
            "schedule_job",
            {
                "p_job_id": job_id,
                "p_delays": plan.to_json(),
                "p_escalation_reason": plan.escalation_reason,
                "p_now": now,
            },
        )
        return _job(row) if row else None

    def create_greeting_job(self, conversation_id: int, broker_id: str, *, now: float) -> ReplyJob:
        return _job(
            self._call(
                "create_greeting_job",
                {"p_conversation_id": conversation_id, "p_broker_id": broker_id, "p_now": now},
            )
        )

    def get_job(self, job_id: str) -> ReplyJob | None:
        row = self._call("get_job", {"p_job_id": job_id})
        return _job(row) if row else None

    def list_jobs(
        self,
        *,
        states: Iterable[JobState] | None = None,
        conversation_id: int | None = None,
        limit: int = 100,
    ) -> list[ReplyJob]:
        values = None if states is None else [state.value for state in states]
        if values == []:
            return []
        rows = self._call(
            "list_jobs",
            {"p_states": values, "p_conversation_id": conversation_id, "p_limit": limit},
        )
        return [_job(row) for row in rows]

    def prepare_job(
        self,
        job_id: str,
        *,
        broker_id: str,
        delay_s: float,
        escalation_reason: str | None,
        now: float,
    ) -> ReplyJob | None:
        row = self._call(
            "prepare_job",
            {
                "p_job_id": job_id,
                "p_broker_id": broker_id,
                "p_delay_s": delay_s,
                "p_escalation_reason": escalation_reason,
                "p_now": now,
            },
        )
        return _job(row) if row else None

    def claim_job(
        self, job_id: str, *, owner: str, lease_s: float, coalesce_window_s: float, now: float
    ) -> Claim:
        params: Row = {
            "p_job_id": job_id,
            "p_owner": owner,
            "p_lease_s": lease_s,
            "p_coalesce_window_s": coalesce_window_s,
        }
        claim = self._call_at("claim_reply", params, now)
        job = claim.get("job")
        return Claim(
            ClaimStatus(claim["status"]),
            _job(job) if job else None,
            tuple(_job(row) for row in claim.get("batch") or ()),
            reason=claim.get("reason") or "",
            conversation=_conversation(claim["conversation"])
            if claim.get("conversation")
            else None,
        )

    def renew_lease(self, job_id: str, *, owner: str, lease_s: float, now: float) -> bool:
        return bool(
            self._call_at(
                "renew_lease", {"p_job_id": job_id, "p_owner": owner, "p_lease_s": lease_s}, now
            )
        )

    def begin_send(self, job_id: str, *, owner: str, now: float) -> ReplyJob | None:
        row = self._call("begin_send", {"p_job_id": job_id, "p_owner": owner, "p_now": now})
        return _job(row) if row else None

    def start_send(self, job_id: str, *, owner: str, rate_per_s: float, now: float) -> SendStart:
        if self._db_clock:
            found = self._call(
                "start_send_on_db_clock",
                {"p_job_id": job_id, "p_owner": owner, "p_rate_per_s": rate_per_s},
            )
        else:
            window_start, allowed, wait_s = _send_window(rate_per_s, now)
            found = self._call(
                "start_send",
                {
                    "p_job_id": job_id,
                    "p_owner": owner,
                    "p_window_start": window_start,
                    "p_allowed": allowed,
                    "p_wait_s": wait_s,
                    "p_now": now,
                },
            )
        job = found.get("job")
        return SendStart(
            SendGate(found["gate"]),
            _job(job) if job else None,
            wait_s=float(found.get("wait_s") or 0.0),
            reason=found.get("reason") or "",
        )

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
        if not state.is_terminal:
            raise ValueError(f"{state} is not a terminal state")
        return bool(
            self._call(
                "complete_job",
                {
                    "p_job_id": job_id,
                    "p_owner": owner,
                    "p_state": state.value,
                    "p_now": now,
                    "p_broker_id": broker_id,
                    "p_customer_messages": customer_messages,
                    "p_handoff_reason": handoff_reason,
                    "p_reply_text": reply_text,
                    "p_reply_message_id": reply_message_id,
                    "p_used_fallback": used_fallback,
                    "p_fallback_reason": fallback_reason,
                    "p_error": error,
                    "p_error_detail": error_detail,
                },
            )
        )

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
        if not state.is_terminal:
            raise ValueError(f"{state} is not a terminal state")
        return bool(
            self._call(
                "finish_job",
                {
                    "p_job_id": job_id,
                    "p_owner": owner,
                    "p_state": state.value,
                    "p_now": now,
                    "p_reply_text": reply_text,
                    "p_reply_message_id": reply_message_id,
                    "p_used_fallback": used_fallback,
                    "p_fallback_reason": fallback_reason,
                    "p_error": error,
                    "p_error_detail": error_detail,
                },
            )
        )

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
        return bool(
            self._call(
                "retry_job",
                {
                    "p_job_id": job_id,
                    "p_owner": owner,
                    "p_due_at": due_at,
                    "p_error": error,
                    "p_error_detail": error_detail,
                    "p_now": now,
                    "p_min_attempts": min_attempts,
                },
            )
        )

    def hand_back(self, *, owner_prefix: str, now: float) -> list[str]:
        handed = self._call("hand_back", {"p_owner_prefix": owner_prefix, "p_now": now})
        return [str(job_id) for job_id in handed or ()]

    def reap(self, *, now: float, stale_after_s: float, limit: int = 500) -> list[ReapedJob]:
        reaped = self._call_at("reap", {"p_stale_after_s": stale_after_s, "p_limit": limit}, now)
        return [
            ReapedJob(row["job_id"], ReapAction(row["action"]), _float_or_none(row["due_at"]))
            for row in reaped
        ]

    # -- rollout -----------------------------------------------------------------------------
    def get_rollout(self, *, initial: RolloutState) -> RolloutState:
        row = self._call("rollout", {"p_initial": rollout_to_dict(initial)})
        if row is None:
            # The very first read stores the environment's initial state.
            row = self._call("get_rollout", {"p_initial": rollout_to_dict(initial)})
        return _rollout(row)

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
        return bool(
            self._call(
                "save_rollout",
                {
                    "p_state": rollout_to_dict(state),
                    "p_expected": rollout_to_dict(expected),
                    "p_action": action,
                    "p_reason": reason,
                    "p_automatic": automatic,
                    "p_detail": dict(detail) if detail is not None else None,
                },
            )
        )

    def audit_log(self, *, limit: int = 100) -> list[AuditEntry]:
        return [_audit(row) for row in self._call("audit_log", {"p_limit": limit})]

    # -- n8n hand-over -----------------------------------------------------------------------
    def forward_outcome(
        self, job_id: str, *, accepted: bool, reason: str, now: float
    ) -> ReplyJob | None:
        row = self._call(
            "forward_outcome",
            {"p_job_id": job_id, "p_accepted": accepted, "p_reason": reason, "p_now": now},
        )
        return _job(row) if row else None

    def mark_n8n_answered(self, conversation_id: int, *, at: float) -> int:
        return int(
            self._call("mark_n8n_answered", {"p_conversation_id": conversation_id, "p_at": at})
        )

    def requeue_silent_forwards(
        self, *, now: float, silent_after_s: float, horizon_s: float, limit: int = 200
    ) -> list[ReplyJob]:
        rows = self._call(
            "requeue_silent_forwards",
            {
                "p_now": now,
                "p_silent_after_s": silent_after_s,
                "p_horizon_s": horizon_s,
                "p_limit": limit,
            },
        )
        return [_job(row) for row in rows]

    def cancel_unsent_replies(self, *, reason: str, now: float) -> list[ReplyJob]:
        rows = self._call("cancel_unsent_replies", {"p_reason": reason, "p_now": now})
        return [_job(row) for row in rows]

    def cancel_job(self, job_id: str, *, reason: str, now: float) -> bool:
        return bool(
            self._call("cancel_job", {"p_job_id": job_id, "p_reason": reason, "p_now": now})
        )

    def requeue_job(self, job_id: str, *, now: float) -> ReplyJob | None:
        row = self._call("requeue_job", {"p_job_id": job_id, "p_now": now})
        return _job(row) if row else None

    # -- shadow comparisons ------------------------------------------------------------------
    def create_shadow(self, message: InboundMessage, *, now: float) -> ReplyJob | None:
        row = self._call(
            "create_shadow",
            {
                "p_conversation_id": message.conversation_id,
                "p_message_id": message.message_id,
                "p_content": message.content,
                "p_now": now,
            },
        )
        return _job(row) if row else None

    def record_shadow_reply(
        self,
        comparison_id: int,
        *,
        reply: str,
        latency_ms: float,
        used_fallback: bool,
        broker_id: str,
    ) -> None:
        row = self._call(
            "record_shadow_reply",
            {
                "p_comparison_id": comparison_id,
                "p_reply": reply,
                "p_latency_ms": latency_ms,
                "p_used_fallback": used_fallback,
                "p_broker_id": broker_id,
            },
        )
        if row:
            self._score(row)

    def record_n8n_reply(
        self,
        conversation_id: int,
        *,
        reply: str,
        at: float,
        source: str,
        inbound_message_id: int | None = None,
    ) -> Comparison | None:
        row = self._call(
            "record_n8n_reply",
            {
                "p_conversation_id": conversation_id,
                "p_reply": reply,
                "p_at": at,
                "p_source": source,
                "p_inbound_message_id": inbound_message_id,
            },
        )
        return self._score(row) if row else None

    def _score(self, row: Row) -> Comparison:
        """Write the similarity once both replies are in. It is Python's
        (app.domain.similarity), so it cannot be part of the database function; the write is
        idempotent and whichever writer sees both replies last makes it."""
        comparison = _comparison(row)
        if comparison.shadow_reply is None or comparison.n8n_reply is None:
            return comparison
        score = similarity(comparison.shadow_reply, comparison.n8n_reply)
        self._call("score_comparison", {"p_comparison_id": comparison.id, "p_similarity": score})
        return replace(comparison, similarity=score)

    def set_verdict(
        self, comparison_id: int, verdict: Verdict, *, note: str, actor: str, now: float
    ) -> bool:
        return bool(
            self._call(
                "set_verdict",
                {
                    "p_comparison_id": comparison_id,
                    "p_verdict": verdict.value,
                    "p_note": note,
                    "p_actor": actor,
                    "p_now": now,
                },
            )
        )

    def get_comparison(self, comparison_id: int) -> Comparison | None:
        row = self._call("get_comparison", {"p_comparison_id": comparison_id})
        return _comparison(row) if row else None

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
    ) -> list[Comparison]:
        rows = self._call(
            "list_comparisons",
            {
                "p_since": since,
                "p_until": until,
                "p_broker_id": broker_id,
                "p_max_similarity": max_similarity,
                "p_unrated": unrated,
                "p_conversation_id": conversation_id,
                "p_limit": limit,
            },
        )
        return [_comparison(row) for row in rows]

    # -- circuit breakers --------------------------------------------------------------------
    def get_circuit(self, name: str) -> Circuit:
        row = self._call("get_circuit", {"p_name": name})
        if not row:
            return Circuit()
        return Circuit(
            position=CircuitPosition(row["position"]),
            consecutive_failures=int(row["consecutive_failures"]),
            opened_at=_float_or_none(row["opened_at"]),
            probe_started_at=_float_or_none(row["probe_started_at"]),
            version=int(row["version"]),
        )

    def swap_circuit(self, name: str, *, expected_version: int, circuit: Circuit) -> bool:
        return bool(
            self._call(
                "swap_circuit",
                {
                    "p_name": name,
                    "p_expected_version": expected_version,
                    "p_position": circuit.position.value,
                    "p_consecutive_failures": circuit.consecutive_failures,
                    "p_opened_at": circuit.opened_at,
                    "p_probe_started_at": circuit.probe_started_at,
                },
            )
        )

    # -- the new pipeline's health -----------------------------------------------------------
    def reply_window_stats(
        self, *, since: float, now: float, overdue_s: float = 30.0
    ) -> ReplyWindowStats:
        stats = self._call(
            "reply_window_summary", {"p_since": since, "p_now": now, "p_overdue_s": overdue_s}
        )
        return ReplyWindowStats(
            finished=int(stats["finished"]),
            failed=int(stats["failed"]),
            sent=int(stats["sent"]),
            fallbacks=int(stats["fallbacks"]),
            p50_s=_float_or_none(stats["p50_s"]),
            p95_s=_float_or_none(stats["p95_s"]),
            backlog=int(stats["backlog"]),
        )

    def reply_latency_histogram(
        self, *, since: float, bounds_s: Sequence[float]
    ) -> LatencyHistogram:
        found = self._call(
            "reply_latency_histogram", {"p_since": since, "p_bounds": list(bounds_s)}
        )
        return LatencyHistogram(
            bounds_s=tuple(bounds_s),
            cumulative=tuple(int(n) for n in found["buckets"]),
            count=int(found["count"]),
            sum_s=float(found["sum"]),
        )

    # -- shared runtime state ----------------------------------------------------------------
    def acquire_send_slot(self, rate_per_s: float, *, now: float) -> float:
        if self._db_clock:
            return float(self._call("acquire_send_slot_on_db_clock", {"p_rate_per_s": rate_per_s}))
        window_start, allowed, wait_s = _send_window(rate_per_s, now)
        if self._call("acquire_send_slot", {"p_window_start": window_start, "p_allowed": allowed}):
            return 0.0
        return wait_s

    def heartbeat(self, beat: WorkerHeartbeat) -> None:
        self._call(
            "heartbeat",
            {
                "p_worker_id": beat.worker_id,
                "p_hostname": beat.hostname,
                "p_pid": beat.pid,
                "p_concurrency": beat.concurrency,
                "p_started_at": beat.started_at,
                "p_seen_at": beat.seen_at,
            },
        )

    def live_workers(self, *, since: float) -> list[WorkerHeartbeat]:
        return [
            WorkerHeartbeat(
                worker_id=row["worker_id"],
                hostname=row["hostname"],
                pid=int(row["pid"]),
                concurrency=int(row["concurrency"]),
                started_at=float(row["started_at"]),
                seen_at=float(row["seen_at"]),
            )
            for row in self._call("live_workers", {"p_since": since})
        ]

    def count(self, name: str, label: str, amount: int = 1) -> None:
        self._call("count", {"p_name": name, "p_label": label, "p_amount": amount})

    def counters(self, name: str) -> dict[str, int]:
        found = self._call("counters", {"p_name": name})
        return {label: int(value) for label, value in found.items()}

    def job_state_counts(self) -> dict[str, int]:
        counts = self._call("job_state_counts")
        return {state: int(n) for state, n in counts.items()}

    def prune(self, *, now: float, retention: Retention = DEFAULT_RETENTION) -> int:
        params = {
            "p_now": now,
            "p_deliveries_before": now - retention.deliveries_s,
            "p_heartbeats_before": now - retention.heartbeats_s,
            "p_payloads_before": now - retention.payloads_s,
            "p_jobs_before": now - retention.jobs_s,
            "p_comparisons_before": now - retention.comparisons_s,
            "p_batch": PRUNE_BATCH,
        }
        total = 0
        for _ in range(PRUNE_MAX_BATCHES):
            changed = int(self._call("prune_batch", params))
            total += changed
            if changed == 0:
                break
        return total


def _send_window(rate_per_s: float, now: float) -> tuple[float, int, float]:
    """The send window `now` falls in, the sends it allows and the wait until the next one, on
    the caller's clock. The arithmetic is the SQLite store's, in Python, so both agree to the
    bit; the database only counts sends in the window, atomically. On the database's clock,
    `ai_broker_send_window` (migration 0005) does it in SQL (a moment right at an edge may fall
    in the neighbouring window there: float division, not Python's exact modulo)."""
    width = max(1.0, 1.0 / rate_per_s)
    window_start = now - (now % width)
    return window_start, max(1, round(rate_per_s * width)), max(0.001, window_start + width - now)


def _outcome(found: Row) -> InboundOutcome:
    job = found.get("job")
    return InboundOutcome(
        InboundStatus(found["status"]), found["reason"], _job(job) if job else None
    )


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def _job(row: Row) -> ReplyJob:
    return ReplyJob(
        id=row["id"],
        seq=int(row["seq"]),
        kind=JobKind(row["kind"]),
        conversation_id=int(row["conversation_id"]),
        state=JobState(row["state"]),
        attempts=int(row["attempts"]),
        inbound_message_id=row["inbound_message_id"],
        inbound_content=row["inbound_content"],
        delivery_id=row["delivery_id"],
        broker_id=row["broker_id"],
        capacity_held=bool(row["capacity_held"]),
        merged_into=row["merged_into"],
        lease_owner=row["lease_owner"],
        lease_expires_at=_float_or_none(row["lease_expires_at"]),
        delay_s=_float_or_none(row["delay_s"]),
        due_at=_float_or_none(row["due_at"]),
        escalation_reason=row["escalation_reason"],
        received_at=float(row["received_at"]),
        started_at=_float_or_none(row["started_at"]),
        send_started_at=_float_or_none(row["send_started_at"]),
        finished_at=_float_or_none(row["finished_at"]),
        reply_text=row["reply_text"],
        reply_message_id=row["reply_message_id"],
        used_fallback=bool(row["used_fallback"]),
        fallback_reason=row["fallback_reason"],
        error=row["error"],
        updated_at=float(row["updated_at"]),
        route=row["route"],
        route_reason=row["route_reason"],
        inbound_payload=row["inbound_payload"],
        inbound_headers=row.get("inbound_headers"),
        comparison_id=row["comparison_id"],
    )


def _broker(row: Row) -> Broker:
    return Broker(
        id=row["id"],
        name=row["name"],
        persona_type=row["persona_type"],
        title=row["title"],
        specialty=row["specialty"],
        is_active=bool(row["is_active"]),
        current_workload=int(row["current_workload"]),
        max_concurrent_chats=int(row["max_concurrent_chats"]),
        total_conversations=int(row["total_conversations"]),
        messages_handled=int(row["messages_handled"]),
        handoffs=int(row["handoffs"]),
    )


def _conversation(row: Row) -> BrokerConversation:
    return BrokerConversation(
        conversation_id=int(row["conversation_id"]),
        broker_id=row["broker_id"],
        contact_id=row["contact_id"],
        lead_score=row["lead_score"],
        lead_profile=row["lead_profile"],
        status=ConversationStatus(row["status"]),
        message_count=int(row["message_count"]),
        handoff_reason=row["handoff_reason"],
        greeting_job_id=row["greeting_job_id"],
        last_customer_message_at=_float_or_none(row["last_customer_message_at"]),
        last_reply_at=_float_or_none(row["last_reply_at"]),
        assigned_at=float(row["assigned_at"]),
    )


def _rollout(row: Row) -> RolloutState:
    return RolloutState(
        percentage=int(row["percentage"]),
        shadow=bool(row["shadow"]),
        n8n_enabled=bool(row["n8n_enabled"]),
        queue_paused=bool(row["queue_paused"]),
        # The codec drops keys an older or newer build does not know.
        guard=guard_from_json(json.dumps(row["guard"])),
        updated_at=float(row["updated_at"]),
        updated_by=row["updated_by"],
    )


def _audit(row: Row) -> AuditEntry:
    return AuditEntry(
        id=int(row["id"]),
        at=float(row["at"]),
        actor=row["actor"],
        action=row["action"],
        before=row["before"],
        after=row["after"],
        reason=row["reason"],
        automatic=bool(row["automatic"]),
        detail=row["detail"],
    )


def _comparison(row: Row) -> Comparison:
    return Comparison(
        id=int(row["id"]),
        conversation_id=int(row["conversation_id"]),
        inbound_message_id=int(row["inbound_message_id"]),
        customer_message=row["customer_message"],
        received_at=float(row["received_at"]),
        broker_id=row["broker_id"],
        shadow_reply=row["shadow_reply"],
        shadow_latency_ms=_float_or_none(row["shadow_latency_ms"]),
        shadow_used_fallback=row["shadow_used_fallback"],
        n8n_reply=row["n8n_reply"],
        n8n_latency_ms=_float_or_none(row["n8n_latency_ms"]),
        n8n_source=row["n8n_source"],
        similarity=_float_or_none(row["similarity"]),
        verdict=Verdict(row["verdict"]) if row["verdict"] else None,
        verdict_note=row["verdict_note"],
        verdict_by=row["verdict_by"],
        verdict_at=_float_or_none(row["verdict_at"]),
    )
