"""The production store: Supabase (PostgreSQL behind PostgREST), through supabase-py.

Every update that must be atomic across processes is one call of one Postgres function
(app/store/migrations) through PostgREST's /rpc: one HTTP request is one database transaction,
whatever the number of rows it touches. Reads of one table are plain table selects, and a few
single-statement writes go through the table API. Times are epoch seconds (double precision)
as in the SQLite store, so both stores return identical records and pass the same contract
(tests/integration/test_store_contract.py).

The schema is not created through the REST API (it cannot be): `ai-broker db init` applies or
prints the migrations (app/store/postgres_migrations.py) and `init_schema` checks the version.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any, TypeVar, cast

import httpx
from postgrest.exceptions import APIError
from postgrest.types import ReturnMethod
from supabase import Client, ClientOptions, create_client

from app.domain.circuit import Circuit, CircuitPosition
from app.domain.events import InboundMessage
from app.domain.jobs import JobKind, JobState, ReplyJob
from app.domain.personas import BrokerPersona
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
    ReapAction,
    ReapedJob,
    ReplyWindowStats,
    Retention,
    Verdict,
    WorkerHeartbeat,
)
from app.store.postgres_migrations import SCHEMA_VERSION

logger = logging.getLogger(__name__)

T = TypeVar("T")
Row = dict[str, Any]

# Below Chatwoot's 5 s webhook timeout: a slow store must fail the request, not outlive it.
DEFAULT_TIMEOUT_S = 4.0
# PostgREST error codes that mean the schema is missing or older than this build.
_SCHEMA_ERRORS = {"PGRST202", "PGRST205", "42883", "42P01", "42703"}
_AUTH_ERRORS = {"PGRST301", "PGRST302", "42501"}


def create_supabase_store(
    url: str, service_key: str, *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> SupabaseStore:
    """A store on the Supabase project at `url`, authenticated with its service-role key.

    supabase-py waits 120 s for PostgREST by default; a store call must fail fast instead, so
    the receiver can still answer Chatwoot within its 5 s. The HTTP client carries the timeout
    (supabase-py deprecates its own timeout option).
    """
    options = ClientOptions(httpx_client=httpx.Client(timeout=timeout_s))
    return SupabaseStore(create_client(url, service_key, options))


class SupabaseStore:
    def __init__(self, client: Client) -> None:
        self._client = client

    # -- calls -------------------------------------------------------------------------------
    def _call(self, what: str, request: Callable[[], T]) -> T:
        try:
            return request()
        except APIError as exc:
            raise StoreError(_describe(what, exc)) from exc
        except httpx.HTTPError as exc:
            raise StoreError(f"Supabase is unreachable ({what}): {exc!r}") from exc

    def _rpc(self, function: str, params: Mapping[str, object]) -> Any:
        """Call one ai_broker_* Postgres function: one request, one transaction."""
        name = f"ai_broker_{function}"
        return self._call(name, lambda: self._client.rpc(name, dict(params)).execute()).data

    def _select(self, table: str, build: Callable[[Any], Any], columns: str = "*") -> list[Row]:
        query = build(self._client.table(table).select(columns))
        rows: list[Row] = self._call(f"select {table}", query.execute).data
        return rows

    # -- lifecycle ---------------------------------------------------------------------------
    def init_schema(self) -> None:
        """Check the schema: it is created by `ai-broker db init`, not through the REST API."""
        self.ping()

    def ping(self) -> None:
        version = self._schema_version()
        if version is None:
            raise StoreError(
                "the Supabase schema is missing: run `ai-broker db init` to apply the migrations"
            )
        # A newer schema is fine: migrations only add, and a rolling deploy runs old builds
        # against the new schema for a while.
        if version < SCHEMA_VERSION:
            raise StoreError(
                f"the Supabase schema is at version {version} but this build needs "
                f"{SCHEMA_VERSION}: run `ai-broker db init` to apply the new migrations"
            )

    def close(self) -> None:
        # The store owns its client (create_supabase_store / bootstrap build it for the store).
        self._client.postgrest.aclose()

    def _schema_version(self) -> str | None:
        rows = self._select("schema_meta", lambda q: q.eq("key", "schema_version"), columns="value")
        return str(rows[0]["value"]) if rows else None

    # -- brokers and capacity ----------------------------------------------------------------
    def seed_brokers(self, personas: Iterable[BrokerPersona], *, max_concurrent_chats: int) -> int:
        now = time.time()
        rows = [
            {
                "id": persona.slug,
                "name": persona.name,
                "persona_type": persona.type.value,
                "title": persona.title,
                "specialty": persona.specialty,
                "max_concurrent_chats": max_concurrent_chats,
                "created_at": now,
                "updated_at": now,
            }
            for persona in personas
        ]
        if not rows:
            return 0
        # One INSERT ... ON CONFLICT DO NOTHING: the rows that come back are the new ones.
        inserted = self._call(
            "seed ai_brokers",
            self._client.table("ai_brokers")
            .upsert(rows, ignore_duplicates=True, on_conflict="id")
            .select("id")
            .execute,
        ).data
        return len(inserted)

    def list_brokers(self) -> list[Broker]:
        return [_broker(row) for row in self._select("ai_brokers", lambda q: q.order("seq"))]

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
        row = self._rpc(
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
        rows = self._select(
            "broker_conversations", lambda q: q.eq("conversation_id", conversation_id)
        )
        return _conversation(rows[0]) if rows else None

    def hold_capacity(self, job_id: str, broker_id: str, *, now: float) -> bool:
        return bool(
            self._rpc("hold_capacity", {"p_job_id": job_id, "p_broker_id": broker_id, "p_now": now})
        )

    def release_capacity(self, job_id: str, *, now: float) -> None:
        self._rpc("release_capacity", {"p_job_id": job_id, "p_now": now})

    def set_conversation_status(
        self, conversation_id: int, status: ConversationStatus, reason: str, *, now: float
    ) -> list[str]:
        skipped = self._rpc(
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
        self._rpc(
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
    ) -> InboundOutcome:
        outcome = self._rpc(
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
            },
        )
        job = outcome.get("job")
        return InboundOutcome(
            InboundStatus(outcome["status"]), outcome["reason"], _job(job) if job else None
        )

    def create_greeting_job(self, conversation_id: int, broker_id: str, *, now: float) -> ReplyJob:
        return _job(
            self._rpc(
                "create_greeting_job",
                {"p_conversation_id": conversation_id, "p_broker_id": broker_id, "p_now": now},
            )
        )

    def get_job(self, job_id: str) -> ReplyJob | None:
        rows = self._select("reply_jobs", lambda q: q.eq("id", job_id))
        return _job(rows[0]) if rows else None

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

        def build(query: Any) -> Any:
            if values is not None:
                query = query.in_("state", values)
            if conversation_id is not None:
                query = query.eq("conversation_id", conversation_id)
            return query.order("seq", desc=True).limit(limit)

        return [_job(row) for row in self._select("reply_jobs", build)]

    def prepare_job(
        self,
        job_id: str,
        *,
        broker_id: str,
        delay_s: float,
        escalation_reason: str | None,
        now: float,
    ) -> ReplyJob | None:
        row = self._rpc(
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
        claim = self._rpc(
            "claim_job",
            {
                "p_job_id": job_id,
                "p_owner": owner,
                "p_lease_s": lease_s,
                "p_coalesce_window_s": coalesce_window_s,
                "p_now": now,
            },
        )
        job = claim.get("job")
        return Claim(
            ClaimStatus(claim["status"]),
            _job(job) if job else None,
            tuple(_job(row) for row in claim.get("batch") or ()),
            reason=claim.get("reason") or "",
        )

    def renew_lease(self, job_id: str, *, owner: str, lease_s: float, now: float) -> bool:
        return bool(
            self._rpc(
                "renew_lease",
                {"p_job_id": job_id, "p_owner": owner, "p_lease_s": lease_s, "p_now": now},
            )
        )

    def begin_send(self, job_id: str, *, owner: str, now: float) -> ReplyJob | None:
        row = self._rpc("begin_send", {"p_job_id": job_id, "p_owner": owner, "p_now": now})
        return _job(row) if row else None

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
            self._rpc(
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
            self._rpc(
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
        handed = self._rpc("hand_back", {"p_owner_prefix": owner_prefix, "p_now": now})
        return [str(job_id) for job_id in handed or ()]

    def reap(self, *, now: float, stale_after_s: float, limit: int = 500) -> list[ReapedJob]:
        reaped = self._rpc(
            "reap", {"p_now": now, "p_stale_after_s": stale_after_s, "p_limit": limit}
        )
        return [
            ReapedJob(row["job_id"], ReapAction(row["action"]), _float_or_none(row["due_at"]))
            for row in reaped
        ]

    # -- rollout -----------------------------------------------------------------------------
    def get_rollout(self, *, initial: RolloutState) -> RolloutState:
        rows = self._select("rollout_state", lambda q: q.eq("id", 1))
        if rows:
            return _rollout(rows[0])
        return _rollout(self._rpc("get_rollout", {"p_initial": rollout_to_dict(initial)}))

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
            self._rpc(
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
        rows = self._select("rollout_audit", lambda q: q.order("id", desc=True).limit(limit))
        return [
            AuditEntry(
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
            for row in rows
        ]

    # -- n8n hand-over -----------------------------------------------------------------------
    def forward_outcome(
        self, job_id: str, *, accepted: bool, reason: str, now: float
    ) -> ReplyJob | None:
        row = self._rpc(
            "forward_outcome",
            {"p_job_id": job_id, "p_accepted": accepted, "p_reason": reason, "p_now": now},
        )
        return _job(row) if row else None

    def cancel_unsent_replies(self, *, reason: str, now: float) -> list[ReplyJob]:
        rows = self._rpc("cancel_unsent_replies", {"p_reason": reason, "p_now": now})
        return [_job(row) for row in rows]

    def cancel_job(self, job_id: str, *, reason: str, now: float) -> bool:
        return bool(self._rpc("cancel_job", {"p_job_id": job_id, "p_reason": reason, "p_now": now}))

    def requeue_job(self, job_id: str, *, now: float) -> ReplyJob | None:
        row = self._rpc("requeue_job", {"p_job_id": job_id, "p_now": now})
        return _job(row) if row else None

    # -- shadow comparisons ------------------------------------------------------------------
    def create_shadow(self, message: InboundMessage, *, now: float) -> ReplyJob | None:
        row = self._rpc(
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
        response = self._call(
            "update shadow_comparisons",
            self._client.table("shadow_comparisons")
            .update(
                {
                    "shadow_reply": reply,
                    "shadow_latency_ms": latency_ms,
                    "shadow_used_fallback": used_fallback,
                    "broker_id": broker_id,
                }
            )
            .eq("id", comparison_id)
            .execute,
        )
        rows = cast(list[Row], response.data)
        if rows:
            self._score(rows[0])

    def record_n8n_reply(
        self,
        conversation_id: int,
        *,
        reply: str,
        at: float,
        source: str,
        inbound_message_id: int | None = None,
    ) -> Comparison | None:
        row = self._rpc(
            "record_n8n_reply",
            {
                "p_conversation_id": conversation_id,
                "p_reply": reply,
                "p_at": at,
                "p_source": source,
                "p_inbound_message_id": inbound_message_id,
            },
        )
        if not row:
            return None
        return self._score(row)

    def _score(self, row: Row) -> Comparison:
        """Write the similarity once both replies are in.

        It is Python's (app.domain.similarity), so it cannot be part of the database function;
        the write is idempotent and whichever writer sees both replies last makes it.
        """
        comparison = _comparison(row)
        if comparison.shadow_reply is None or comparison.n8n_reply is None:
            return comparison
        score = similarity(comparison.shadow_reply, comparison.n8n_reply)
        self._call(
            "score shadow_comparisons",
            self._client.table("shadow_comparisons")
            .update({"similarity": score}, returning=ReturnMethod.minimal)
            .eq("id", comparison.id)
            .execute,
        )
        return replace(comparison, similarity=score)

    def set_verdict(
        self, comparison_id: int, verdict: Verdict, *, note: str, actor: str, now: float
    ) -> bool:
        rows = self._call(
            "update shadow_comparisons",
            self._client.table("shadow_comparisons")
            .update(
                {
                    "verdict": verdict.value,
                    "verdict_note": note,
                    "verdict_by": actor,
                    "verdict_at": now,
                }
            )
            .eq("id", comparison_id)
            .select("id")
            .execute,
        ).data
        return bool(rows)

    def get_comparison(self, comparison_id: int) -> Comparison | None:
        rows = self._select("shadow_comparisons", lambda q: q.eq("id", comparison_id))
        return _comparison(rows[0]) if rows else None

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
        def build(query: Any) -> Any:
            if since is not None:
                query = query.gte("received_at", since)
            if until is not None:
                query = query.lt("received_at", until)
            if broker_id is not None:
                query = query.eq("broker_id", broker_id)
            if max_similarity is not None:
                query = query.lte("similarity", max_similarity)
            if conversation_id is not None:
                query = query.eq("conversation_id", conversation_id)
            if unrated:
                query = query.is_("verdict", None)
            return query.order("id", desc=True).limit(limit)

        return [_comparison(row) for row in self._select("shadow_comparisons", build)]

    # -- circuit breakers --------------------------------------------------------------------
    def get_circuit(self, name: str) -> Circuit:
        rows = self._select("circuit_breakers", lambda q: q.eq("name", name))
        if not rows:
            return Circuit()
        row = rows[0]
        return Circuit(
            position=CircuitPosition(row["position"]),
            consecutive_failures=int(row["consecutive_failures"]),
            opened_at=_float_or_none(row["opened_at"]),
            probe_started_at=_float_or_none(row["probe_started_at"]),
            version=int(row["version"]),
        )

    def swap_circuit(self, name: str, *, expected_version: int, circuit: Circuit) -> bool:
        return bool(
            self._rpc(
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
        stats = self._rpc(
            "reply_window_stats", {"p_since": since, "p_now": now, "p_overdue_s": overdue_s}
        )
        return ReplyWindowStats(
            finished=int(stats["finished"]),
            failed=int(stats["failed"]),
            sent=int(stats["sent"]),
            fallbacks=int(stats["fallbacks"]),
            latencies_s=tuple(float(value) for value in stats["latencies_s"]),
            backlog=int(stats["backlog"]),
        )

    # -- shared runtime state ----------------------------------------------------------------
    def acquire_send_slot(self, rate_per_s: float, *, now: float) -> float:
        # The window arithmetic is the SQLite store's, in Python, so both agree to the bit;
        # the database only counts sends in the window, atomically.
        width = max(1.0, 1.0 / rate_per_s)
        allowed = max(1, round(rate_per_s * width))
        window_start = now - (now % width)
        if self._rpc("acquire_send_slot", {"p_window_start": window_start, "p_allowed": allowed}):
            return 0.0
        return max(0.001, window_start + width - now)

    def heartbeat(self, beat: WorkerHeartbeat) -> None:
        self._rpc(
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
        rows = self._select(
            "worker_heartbeats",
            lambda q: q.gte("seen_at", since).order("started_at").order("worker_id"),
        )
        return [
            WorkerHeartbeat(
                worker_id=row["worker_id"],
                hostname=row["hostname"],
                pid=int(row["pid"]),
                concurrency=int(row["concurrency"]),
                started_at=float(row["started_at"]),
                seen_at=float(row["seen_at"]),
            )
            for row in rows
        ]

    def count(self, name: str, label: str, amount: int = 1) -> None:
        self._rpc("count", {"p_name": name, "p_label": label, "p_amount": amount})

    def counters(self, name: str) -> dict[str, int]:
        rows = self._select("metric_counters", lambda q: q.eq("name", name), columns="label,value")
        return {row["label"]: int(row["value"]) for row in rows}

    def job_state_counts(self) -> dict[str, int]:
        counts = self._rpc("job_state_counts", {})
        return {state: int(n) for state, n in counts.items()}

    def reply_latencies(self, *, since: float) -> list[float]:
        return [float(value) for value in self._rpc("reply_latencies", {"p_since": since})]

    def prune(self, *, now: float, retention: Retention = DEFAULT_RETENTION) -> None:
        # Independent statements: nothing else depends on them happening together.
        for table, column, before in (
            ("webhook_deliveries", "received_at", now - retention.deliveries_s),
            ("send_windows", "window_start", now - 60),
            ("worker_heartbeats", "seen_at", now - retention.heartbeats_s),
            ("reply_jobs", "finished_at", now - retention.jobs_s),
            ("shadow_comparisons", "received_at", now - retention.comparisons_s),
        ):
            self._call(
                f"prune {table}",
                self._client.table(table)
                .delete(returning=ReturnMethod.minimal)
                .lt(column, before)
                .execute,
            )
        self._call(
            "clear old webhook bodies",
            self._client.table("reply_jobs")
            .update({"inbound_payload": None}, returning=ReturnMethod.minimal)
            .lt("finished_at", now - retention.payloads_s)
            .not_.is_("inbound_payload", "null")
            .execute,
        )


def _describe(what: str, error: APIError) -> str:
    code = error.code or ""
    detail = f"{error.message or 'request failed'} (code {code or 'none'})"
    if code in _SCHEMA_ERRORS:
        return (
            f"Supabase {what} failed: {detail}; the schema is missing or older than this "
            "build: run `ai-broker db init`"
        )
    if code in _AUTH_ERRORS or (error.message or "").lower() in {
        "invalid api key",
        "no api key found in request",
    }:
        return f"Supabase refused {what}: {detail}; check SUPABASE_SERVICE_ROLE_KEY"
    return f"Supabase {what} failed: {detail}"


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
