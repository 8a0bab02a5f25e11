"""The console's aggregate queries on PostgreSQL (and Supabase): `Analytics` over an `Rpc`.

Each method is one call of one `ai_broker_console_*` function (app/store/migrations/
0003_console.sql) that returns one jsonb value, so PostgREST's max-rows never cuts a result,
and both transports (psycopg and supabase-py, app/store/rpc.py) serve it. This class only turns
the JSON into the records SqliteAnalytics returns, with the same Python types: JSON has one
number type, so every float column goes through float() (PostgreSQL's jsonb writes 10.0 as 10).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.store.analytics import (
    EXPORT_LIMIT,
    HISTOGRAM_BINS,
    LIST_TEXT_CHARS,
    SAMPLE_RETENTION_S,
    BrokerActivity,
    BrokerConversations,
    BrokerReplies,
    Buckets,
    ComparisonFilter,
    ComparisonPage,
    ComparisonSummary,
    JobDetail,
    JobFilter,
    JobPage,
    JobRow,
    LatencyBucket,
    MergedMessage,
    N8nShare,
    OperatorAction,
    OutcomeBucket,
    PercentageStep,
    TrafficBucket,
    WindowStats,
    WorkerStatus,
    WorkloadSample,
    rounded_mean,
    search_text,
)
from app.store.models import Comparison
from app.store.postgres import _comparison as comparison_from_json
from app.store.rpc import Rpc

Row = dict[str, Any]


class PostgresAnalytics:
    """Read-mostly aggregates over the store's own transport (the same pool of connections,
    or the same REST client)."""

    def __init__(self, rpc: Rpc) -> None:
        self._rpc = rpc

    def _call(self, function: str, params: Mapping[str, object] | None = None) -> Any:
        return self._rpc.call(function, params or {})

    def close(self) -> None:
        """Nothing of its own to close: the transport is the store's, closed with the store."""

    # -- the queue and the workers -----------------------------------------------------------
    def state_counts(self) -> dict[str, int]:
        counts = self._call("console_state_counts")
        return {state: int(n) for state, n in counts.items()}

    def overdue(self, *, now: float, overdue_s: float = 30.0) -> int:
        return int(self._call("console_overdue", {"p_now": now, "p_overdue_s": overdue_s}))

    def unsent_replies(self) -> int:
        return int(self._call("console_unsent_replies"))

    def workers(self) -> list[WorkerStatus]:
        return [
            WorkerStatus(
                worker_id=row["worker_id"],
                hostname=row["hostname"],
                pid=int(row["pid"]),
                concurrency=int(row["concurrency"]),
                started_at=float(row["started_at"]),
                seen_at=float(row["seen_at"]),
            )
            for row in self._call("console_workers")
        ]

    # -- throughput, latency, traffic ----------------------------------------------------------
    def outcomes(self, buckets: Buckets) -> list[OutcomeBucket]:
        counts: dict[int, dict[str, int]] = {}
        for row in self._call("console_outcomes", _cut(buckets)):
            counts.setdefault(int(row["b"]), {})[row["outcome"]] = int(row["n"])
        return [
            OutcomeBucket(start=start, **counts.get(index, {}))
            for index, start in enumerate(buckets.starts())
        ]

    def latencies(self, buckets: Buckets) -> list[LatencyBucket]:
        return [
            LatencyBucket(
                start=buckets.start + int(row["b"]) * buckets.size_s,
                replies=int(row["n"]),
                p50_s=float(row["p50"]),
                p95_s=float(row["p95"]),
            )
            for row in self._call("console_latencies", _cut(buckets))
        ]

    def window_stats(self, *, since: float, until: float) -> WindowStats:
        row = self._call("console_window_stats", {"p_since": since, "p_until": until})
        return WindowStats(
            since=since,
            until=until,
            sent=int(row["sent"]),
            handed_off=int(row["handed_off"]),
            failed=int(row["failed"]),
            fallbacks=int(row["fallbacks"]),
            forwarded=int(row["forwarded"]),
            p50_s=_float_or_none(row["p50"]),
            p95_s=_float_or_none(row["p95"]),
        )

    def n8n_share(self, *, since: float, until: float) -> N8nShare:
        row = self._call("console_n8n_share", {"p_since": since, "p_until": until})
        return N8nShare(
            since=since,
            until=until,
            taken=int(row["taken"]),
            answered=int(row["answered"]),
            silent=int(row["silent"]),
            failed=int(row["failed"]),
            p50_s=_float_or_none(row["p50"]),
        )

    def traffic(self, buckets: Buckets) -> list[TrafficBucket]:
        by_index = {int(row["b"]): row for row in self._call("console_traffic", _cut(buckets))}
        result = []
        for index, start in enumerate(buckets.starts()):
            row = by_index.get(index)
            result.append(
                TrafficBucket(start, int(row["new"]) if row else 0, int(row["n8n"]) if row else 0)
            )
        return result

    def percentage_steps(self, *, since: float) -> list[PercentageStep]:
        found = self._call("console_percentage_steps", {"p_since": since})
        steps = [] if found["before"] is None else [PercentageStep(since, int(found["before"]))]
        steps.extend(
            PercentageStep(float(row["at"]), int(row["percentage"])) for row in found["after"]
        )
        return steps

    # -- brokers -----------------------------------------------------------------------------
    def sample_brokers(self, now: float) -> int:
        return int(
            self._call("sample_brokers", {"p_now": now, "p_retention_s": float(SAMPLE_RETENTION_S)})
        )

    def workload_history(self, *, since: float, max_points: int = 300) -> list[WorkloadSample]:
        rows = self._call(
            "console_workload_history", {"p_since": since, "p_max_points": max_points}
        )
        return [
            WorkloadSample(
                sampled_at=float(row["sampled_at"]),
                broker_id=row["broker_id"],
                workload=int(row["workload"]),
                capacity=int(row["capacity"]),
            )
            for row in rows
        ]

    def broker_activity(self, *, since: float, until: float) -> list[BrokerActivity]:
        rows = self._call("console_broker_activity", {"p_since": since, "p_until": until})
        return [
            BrokerActivity(
                broker_id=row["broker_id"],
                replies=int(row["replies"]),
                handoffs=int(row["handoffs"]),
                failures=int(row["failures"]),
                fallbacks=int(row["fallbacks"]),
            )
            for row in rows
        ]

    def broker_conversations(self) -> list[BrokerConversations]:
        return [
            BrokerConversations(
                broker_id=row["broker_id"],
                bot=int(row["bot"]),
                handed_off=int(row["handed_off"]),
                human=int(row["human"]),
            )
            for row in self._call("console_broker_conversations")
        ]

    def broker_replies(self, buckets: Buckets) -> list[BrokerReplies]:
        return [
            BrokerReplies(
                buckets.start + int(row["b"]) * buckets.size_s, row["broker_id"], int(row["n"])
            )
            for row in self._call("console_broker_replies", _cut(buckets))
        ]

    # -- the ledger --------------------------------------------------------------------------
    def search_jobs(self, query: JobFilter, *, offset: int = 0, limit: int = 50) -> JobPage:
        found = self._call(
            "console_search_jobs",
            {
                "p_states": list(query.states) or None,
                "p_kinds": list(query.kinds) or None,
                "p_routes": list(query.routes) or None,
                "p_conversation_id": query.conversation_id,
                "p_broker_id": query.broker_id,
                "p_text": search_text(query),
                "p_since": query.since,
                "p_until": query.until,
                "p_offset": offset,
                "p_limit": limit,
                "p_excerpt_chars": LIST_TEXT_CHARS,
            },
        )
        return JobPage(
            rows=tuple(_job_row(row) for row in found["rows"]),
            total=int(found["total"]),
            offset=offset,
            limit=limit,
        )

    def job_detail(self, job_id: str) -> JobDetail | None:
        row = self._call("console_job_detail", {"p_job_id": job_id})
        if row is None:
            return None
        return JobDetail(
            id=row["id"],
            seq=int(row["seq"]),
            kind=row["kind"],
            state=row["state"],
            route=row["route"],
            route_reason=row["route_reason"],
            conversation_id=int(row["conversation_id"]),
            broker_id=row["broker_id"],
            attempts=int(row["attempts"]),
            inbound_message_id=_int_or_none(row["inbound_message_id"]),
            inbound_content=row["inbound_content"],
            inbound_payload=row["inbound_payload"],
            delivery_id=row["delivery_id"],
            received_at=float(row["received_at"]),
            started_at=_float_or_none(row["started_at"]),
            send_started_at=_float_or_none(row["send_started_at"]),
            finished_at=_float_or_none(row["finished_at"]),
            due_at=_float_or_none(row["due_at"]),
            delay_s=_float_or_none(row["delay_s"]),
            lease_owner=row["lease_owner"],
            lease_expires_at=_float_or_none(row["lease_expires_at"]),
            escalation_reason=row["escalation_reason"],
            reply_text=row["reply_text"],
            reply_message_id=_int_or_none(row["reply_message_id"]),
            used_fallback=bool(row["used_fallback"]),
            fallback_reason=row["fallback_reason"],
            error=row["error"],
            error_detail=row["error_detail"],
            merged_into=row["merged_into"],
            comparison_id=_int_or_none(row["comparison_id"]),
            updated_at=float(row["updated_at"]),
            merged=tuple(
                MergedMessage(m["job_id"], float(m["received_at"]), m["content"])
                for m in row["merged"]
            ),
        )

    # -- shadow comparisons ------------------------------------------------------------------
    def comparisons(
        self, query: ComparisonFilter, *, offset: int = 0, limit: int = 20
    ) -> ComparisonPage:
        found = self._call(
            "console_comparisons",
            {**_comparison_filter(query), "p_offset": offset, "p_limit": limit},
        )
        return ComparisonPage(
            tuple(comparison_from_json(row) for row in found["rows"]), int(found["total"])
        )

    def comparison_summary(self, query: ComparisonFilter) -> ComparisonSummary:
        row = self._call(
            "console_comparison_summary", {**_comparison_filter(query), "p_bins": HISTOGRAM_BINS}
        )
        histogram = [0] * HISTOGRAM_BINS
        for item in row["bins"]:
            histogram[int(item["bin"])] = int(item["n"])
        return ComparisonSummary(
            total=int(row["total"]),
            complete=int(row["complete"]),
            rated=int(row["rated"]),
            better=int(row["better"]),
            same=int(row["same"]),
            worse=int(row["worse"]),
            avg_similarity=rounded_mean(_float_or_none(row["avg_similarity"])),
            below_half=int(row["below_half"]),
            avg_new_latency_ms=rounded_mean(_float_or_none(row["avg_new_latency_ms"])),
            avg_n8n_latency_ms=rounded_mean(_float_or_none(row["avg_n8n_latency_ms"])),
            histogram=tuple(histogram),
        )

    def export_comparisons(
        self, query: ComparisonFilter, *, limit: int = EXPORT_LIMIT
    ) -> list[Comparison]:
        rows = self._call(
            "console_export_comparisons", {**_comparison_filter(query), "p_limit": limit}
        )
        return [comparison_from_json(row) for row in rows]

    def comparison_bounds(self) -> tuple[float, float] | None:
        row = self._call("console_comparison_bounds")
        return None if row is None else (float(row["first"]), float(row["last"]))

    # -- operator actions --------------------------------------------------------------------
    def record_operator_action(
        self, *, actor: str, action: str, target: str, reason: str, now: float
    ) -> None:
        self._call(
            "record_operator_action",
            {
                "p_actor": actor,
                "p_action": action,
                "p_target": target,
                "p_reason": reason,
                "p_now": now,
            },
        )

    def operator_actions(
        self, *, target: str | None = None, limit: int = 50
    ) -> list[OperatorAction]:
        rows = self._call("operator_actions", {"p_target": target, "p_limit": limit})
        return [
            OperatorAction(
                id=int(row["id"]),
                at=float(row["at"]),
                actor=row["actor"],
                action=row["action"],
                target=row["target"],
                reason=row["reason"],
            )
            for row in rows
        ]


# -- helpers -----------------------------------------------------------------------------------
def _cut(buckets: Buckets) -> dict[str, object]:
    return {"p_start": buckets.start, "p_end": buckets.end, "p_size_s": buckets.size_s}


def _comparison_filter(query: ComparisonFilter) -> dict[str, object]:
    return {
        "p_since": query.since,
        "p_until": query.until,
        "p_broker_id": query.broker_id,
        "p_max_similarity": query.max_similarity,
        "p_unrated": query.unrated,
    }


def _job_row(row: Row) -> JobRow:
    return JobRow(
        id=row["id"],
        seq=int(row["seq"]),
        kind=row["kind"],
        state=row["state"],
        route=row["route"],
        conversation_id=int(row["conversation_id"]),
        broker_id=row["broker_id"],
        attempts=int(row["attempts"]),
        received_at=float(row["received_at"]),
        finished_at=_float_or_none(row["finished_at"]),
        used_fallback=bool(row["used_fallback"]),
        message=row["message"],
        error=row["error"],
    )


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)
