"""Aggregate queries for the operations console: the `Analytics` port, its records, and the
embedded SQLite store's implementation.

Every figure the console charts is computed in SQL (bucketed counts, nearest-rank percentiles,
paged searches), so a page never loads the whole ledger into Python. PostgreSQL has the same
queries as functions (app/store/migrations/0003_console.sql, called by
app/store/analytics_postgres.py), and both backends return identical records
(tests/integration/test_analytics_contract.py). What keeps them identical:

- a time bucket is (whole seconds of t - start) div size: CAST truncates here, floor() there
  (PostgreSQL's CAST rounds);
- percentiles are nearest rank: the smallest value whose rank r has r/n >= q;
- rows come in a total order (ties broken by id, text in byte order, PostgreSQL's "C"
  collation), and text search folds ASCII letters only (SQLite's LIKE);
- averages go through `rounded_mean` (the databases sum floats differently);
- the workload thinning's slot length is integer arithmetic in both.

Two small tables belong to the console (schema.sql, and migration 0003 for PostgreSQL):
`broker_samples` (each broker's workload once a minute, written by the worker's maintenance loop
through `sample_brokers`) and `operator_actions` (retries and cancellations from the console;
rollout changes and pauses go to `rollout_audit` through the RolloutService).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol, TypeVar

from app.store.base import StoreError
from app.store.models import Comparison
from app.store.sqlite import comparison_from_row

SAMPLE_RETENTION_S = 7 * 86400
LIST_TEXT_CHARS = 120  # message and error excerpts in ledger lists
HISTOGRAM_BINS = 10
EXPORT_LIMIT = 50_000
# Averages are rounded to this many significant digits on every backend: float sums depend on
# the order and the algorithm (SQLite >= 3.43 compensates, PostgreSQL sums plainly), so the
# last bits of an unrounded average would differ between backends.
MEAN_DIGITS = 10

_T = TypeVar("_T")

# What a finished job counts as on the throughput chart.
_OUTCOME_SQL = (
    "CASE WHEN state IN ('sent', 'handed_off', 'failed', 'forwarded') THEN state "
    "WHEN state = 'recorded' THEN 'shadow' ELSE 'other' END"
)
# A reply of the new pipeline that reached the customer: the guard's latency population.
_ANSWERED_SQL = "kind = 'reply' AND route = 'new' AND state IN ('sent', 'handed_off')"
# Why a message meant for n8n went to the new pipeline instead (app/services/intake.py,
# app/services/rollout.py, the reaper); the same list is in migration 0009.
N8N_FAILED_REASONS = ("n8n_failed", "n8n_circuit_open", "rollback_n8n_unavailable")
_N8N_FAILED_SQL = ", ".join(f"'{reason}'" for reason in N8N_FAILED_REASONS)
# The jobs finished in [?, ?), materialized first: left to itself the planner would walk the
# (state, updated_at) index over every sent job instead of the finished_at range.
_FINISHED_CTE = (
    "finished AS MATERIALIZED (SELECT finished_at, received_at, kind, route, state "
    "FROM reply_jobs WHERE finished_at >= ? AND finished_at < ?)"
)


# -- records -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Buckets:
    """A time range cut into equal buckets; `end` is aligned to the bucket size, so charts
    refreshed every few seconds keep the same bucket edges."""

    start: int
    end: int
    size_s: int

    @classmethod
    def ending_at(cls, now: float, *, span_s: int, size_s: int) -> Buckets:
        end = (int(now) // size_s + 1) * size_s
        return cls(start=end - span_s, end=end, size_s=size_s)

    @property
    def count(self) -> int:
        return (self.end - self.start) // self.size_s

    def starts(self) -> list[int]:
        return [self.start + i * self.size_s for i in range(self.count)]


@dataclass(frozen=True)
class OutcomeBucket:
    start: int
    sent: int = 0
    handed_off: int = 0
    failed: int = 0
    forwarded: int = 0  # answered by n8n
    shadow: int = 0  # shadow replies recorded for comparison
    other: int = 0  # merged, skipped, cancelled

    @property
    def failure_rate(self) -> float | None:
        finished = self.sent + self.handed_off + self.failed
        return self.failed / finished if finished else None


@dataclass(frozen=True)
class LatencyBucket:
    start: int
    replies: int
    p50_s: float
    p95_s: float


@dataclass(frozen=True)
class TrafficBucket:
    """Customer messages by the system that answered them."""

    start: int
    new: int
    n8n: int

    @property
    def new_share(self) -> float | None:
        total = self.new + self.n8n
        return self.new / total if total else None


@dataclass(frozen=True)
class N8nShare:
    """What became of the customer messages routed to n8n that arrived inside one window."""

    since: float
    until: float
    taken: int  # n8n took them (forwarded), answered or not
    answered: int  # n8n's reply was seen
    silent: int  # taken, never answered: the new pipeline answered (N8N_REPLY_TIMEOUT_S)
    failed: int  # n8n did not take them (down, starting up, circuit open): the new pipeline did
    p50_s: float | None  # customer message to n8n's reply

    @property
    def silent_rate(self) -> float | None:
        return self.silent / self.taken if self.taken else None


@dataclass(frozen=True)
class WindowStats:
    """The new pipeline's replies that finished inside one window."""

    since: float
    until: float
    sent: int
    handed_off: int
    failed: int
    fallbacks: int
    forwarded: int
    p50_s: float | None
    p95_s: float | None

    @property
    def finished(self) -> int:
        return self.sent + self.handed_off + self.failed

    @property
    def failure_rate(self) -> float | None:
        return self.failed / self.finished if self.finished else None

    @property
    def fallback_rate(self) -> float | None:
        return self.fallbacks / self.sent if self.sent else None

    @property
    def handoff_rate(self) -> float | None:
        answered = self.sent + self.handed_off
        return self.handed_off / answered if answered else None


@dataclass(frozen=True)
class WorkerStatus:
    worker_id: str
    hostname: str
    pid: int
    concurrency: int
    started_at: float
    seen_at: float


@dataclass(frozen=True)
class BrokerActivity:
    """One broker's replies inside a window, from the ledger."""

    broker_id: str
    replies: int
    handoffs: int
    failures: int
    fallbacks: int


@dataclass(frozen=True)
class BrokerConversations:
    broker_id: str
    bot: int
    handed_off: int
    human: int


@dataclass(frozen=True)
class WorkloadSample:
    sampled_at: float
    broker_id: str
    workload: int
    capacity: int


@dataclass(frozen=True)
class BrokerReplies:
    start: int
    broker_id: str
    replies: int


@dataclass(frozen=True)
class PercentageStep:
    at: float
    percentage: int


@dataclass(frozen=True)
class JobFilter:
    states: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    routes: tuple[str, ...] = ()
    conversation_id: int | None = None
    broker_id: str | None = None
    text: str | None = None  # a job id (or its first characters) or words of the message
    since: float | None = None
    until: float | None = None


@dataclass(frozen=True)
class JobRow:
    id: str
    seq: int
    kind: str
    state: str
    route: str
    conversation_id: int
    broker_id: str | None
    attempts: int
    received_at: float
    finished_at: float | None
    used_fallback: bool
    message: str | None  # excerpt
    error: str | None  # excerpt

    @property
    def latency_s(self) -> float | None:
        return None if self.finished_at is None else self.finished_at - self.received_at


@dataclass(frozen=True)
class JobPage:
    rows: tuple[JobRow, ...]
    total: int
    offset: int
    limit: int


@dataclass(frozen=True)
class MergedMessage:
    job_id: str
    received_at: float
    content: str | None


@dataclass(frozen=True)
class JobDetail:
    """Everything the ledger knows about one job, the traceback and the payload included."""

    id: str
    seq: int
    kind: str
    state: str
    route: str
    route_reason: str | None
    conversation_id: int
    broker_id: str | None
    attempts: int
    inbound_message_id: int | None
    inbound_content: str | None
    inbound_payload: str | None
    delivery_id: str | None
    received_at: float
    started_at: float | None
    send_started_at: float | None
    finished_at: float | None
    due_at: float | None
    delay_s: float | None
    lease_owner: str | None
    lease_expires_at: float | None
    escalation_reason: str | None
    reply_text: str | None
    reply_message_id: int | None
    used_fallback: bool
    fallback_reason: str | None
    error: str | None
    error_detail: str | None
    merged_into: str | None
    comparison_id: int | None
    updated_at: float
    merged: tuple[MergedMessage, ...] = ()


@dataclass(frozen=True)
class ComparisonFilter:
    since: float | None = None
    until: float | None = None
    broker_id: str | None = None
    max_similarity: float | None = None
    unrated: bool = False


@dataclass(frozen=True)
class ComparisonPage:
    rows: tuple[Comparison, ...]
    total: int


@dataclass(frozen=True)
class ComparisonSummary:
    total: int
    complete: int  # both replies in, similarity scored
    rated: int
    better: int
    same: int
    worse: int
    avg_similarity: float | None
    below_half: int  # similarity < 0.5
    avg_new_latency_ms: float | None
    avg_n8n_latency_ms: float | None
    histogram: tuple[int, ...]  # HISTOGRAM_BINS bins over [0, 1]


@dataclass(frozen=True)
class OperatorAction:
    id: int
    at: float
    actor: str
    action: str
    target: str
    reason: str


# -- the port ----------------------------------------------------------------------------------
class Analytics(Protocol):
    """The console's (and the worker's sampling) aggregate queries over the store's database:
    `SqliteAnalytics` for the embedded store, `PostgresAnalytics` for PostgreSQL and Supabase.
    Every backend returns the same records for the same ledger."""

    def close(self) -> None: ...

    # -- the queue and the workers -----------------------------------------------------------
    def state_counts(self) -> dict[str, int]:
        """Ledger jobs by state (all time)."""
        ...

    def overdue(self, *, now: float, overdue_s: float = 30.0) -> int:
        """Jobs queued or waiting past their due time by more than `overdue_s`: the backlog."""
        ...

    def unsent_replies(self) -> int:
        """New-pipeline replies a rollback would cancel now."""
        ...

    def workers(self) -> list[WorkerStatus]:
        """Every worker that ever beat, the latest first (ties by worker id)."""
        ...

    # -- throughput, latency, traffic ----------------------------------------------------------
    def outcomes(self, buckets: Buckets) -> list[OutcomeBucket]:
        """Finished jobs per bucket by outcome (by finish time), every bucket."""
        ...

    def latencies(self, buckets: Buckets) -> list[LatencyBucket]:
        """p50 and p95 of customer message -> reply, for the buckets that have replies."""
        ...

    def window_stats(self, *, since: float, until: float) -> WindowStats: ...

    def n8n_share(self, *, since: float, until: float) -> N8nShare:
        """n8n's messages that arrived in [since, until): taken, answered, silent, failed."""
        ...

    def traffic(self, buckets: Buckets) -> list[TrafficBucket]:
        """Customer messages per bucket (by arrival) by route, every bucket."""
        ...

    def percentage_steps(self, *, since: float) -> list[PercentageStep]: ...

    # -- brokers -----------------------------------------------------------------------------
    def sample_brokers(self, now: float) -> int:
        """Record every active broker's workload now; drop samples older than a week."""
        ...

    def workload_history(self, *, since: float, max_points: int = 300) -> list[WorkloadSample]:
        """By broker id, then time."""
        ...

    def broker_activity(self, *, since: float, until: float) -> list[BrokerActivity]:
        """By broker id."""
        ...

    def broker_conversations(self) -> list[BrokerConversations]:
        """By broker id."""
        ...

    def broker_replies(self, buckets: Buckets) -> list[BrokerReplies]:
        """By bucket, then broker id."""
        ...

    # -- the ledger --------------------------------------------------------------------------
    def search_jobs(self, query: JobFilter, *, offset: int = 0, limit: int = 50) -> JobPage: ...

    def job_detail(self, job_id: str) -> JobDetail | None: ...

    # -- shadow comparisons ------------------------------------------------------------------
    def comparisons(
        self, query: ComparisonFilter, *, offset: int = 0, limit: int = 20
    ) -> ComparisonPage: ...

    def comparison_summary(self, query: ComparisonFilter) -> ComparisonSummary: ...

    def export_comparisons(
        self, query: ComparisonFilter, *, limit: int = EXPORT_LIMIT
    ) -> list[Comparison]: ...

    def comparison_bounds(self) -> tuple[float, float] | None: ...

    # -- operator actions --------------------------------------------------------------------
    def record_operator_action(
        self, *, actor: str, action: str, target: str, reason: str, now: float
    ) -> None: ...

    def operator_actions(
        self, *, target: str | None = None, limit: int = 50
    ) -> list[OperatorAction]: ...


# -- queries -----------------------------------------------------------------------------------
class SqliteAnalytics:
    """Read-mostly aggregate queries over `store.db`; one connection per thread (Streamlit runs
    each session in its own thread), WAL readers never block the workers' writes."""

    def __init__(self, path: Path, *, busy_timeout_s: float = 10.0) -> None:
        self._path = path
        self._busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    # -- connections -------------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(
                self._path,
                timeout=self._busy_timeout_s,
                isolation_level=None,
                check_same_thread=False,
            )
            connection.row_factory = sqlite3.Row
            connection.execute("PRAGMA journal_mode=WAL")
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        try:
            return self._connection().execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"analytics query failed ({exc})") from exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        connection = self._connection()
        try:
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"store is not writable ({exc})") from exc
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()
        self._local = threading.local()

    # -- the queue and the workers -----------------------------------------------------------
    def state_counts(self) -> dict[str, int]:
        """Ledger jobs by state (all time)."""
        rows = self._rows("SELECT state, COUNT(*) AS n FROM reply_jobs GROUP BY state")
        return {row["state"]: row["n"] for row in rows}

    def overdue(self, *, now: float, overdue_s: float = 30.0) -> int:
        """Jobs queued or waiting past their due time by more than `overdue_s`: the backlog."""
        return int(
            self._rows(
                "SELECT COUNT(*) AS n FROM reply_jobs WHERE state IN ('queued', 'waiting') "
                "AND COALESCE(due_at, received_at) < ?",
                (now - overdue_s,),
            )[0]["n"]
        )

    def unsent_replies(self) -> int:
        """New-pipeline replies a rollback would cancel now (same rule as the store's
        `cancel_unsent_replies`)."""
        return int(
            self._rows(
                "SELECT COUNT(*) AS n FROM reply_jobs WHERE kind = 'reply' AND route = 'new' AND "
                "(state IN ('queued', 'waiting') OR "
                "(state = 'running' AND send_started_at IS NULL))"
            )[0]["n"]
        )

    def workers(self) -> list[WorkerStatus]:
        """Every worker that ever beat, alive or not (the caller judges by `seen_at`)."""
        rows = self._rows("SELECT * FROM worker_heartbeats ORDER BY seen_at DESC, worker_id")
        return [_record(WorkerStatus, row) for row in rows]

    # -- throughput, latency, traffic ----------------------------------------------------------
    def outcomes(self, buckets: Buckets) -> list[OutcomeBucket]:
        """Finished jobs per bucket by outcome (by finish time)."""
        rows = self._rows(
            f"SELECT (CAST(finished_at AS INTEGER) - ?) / ? AS b, {_OUTCOME_SQL} AS outcome, "  # noqa: S608
            "COUNT(*) AS n FROM reply_jobs WHERE finished_at >= ? AND finished_at < ? "
            "GROUP BY b, outcome",
            (buckets.start, buckets.size_s, buckets.start, buckets.end),
        )
        counts: dict[int, dict[str, int]] = {}
        for row in rows:
            counts.setdefault(row["b"], {})[row["outcome"]] = row["n"]
        return [
            OutcomeBucket(start=start, **counts.get(index, {}))
            for index, start in enumerate(buckets.starts())
        ]

    def latencies(self, buckets: Buckets) -> list[LatencyBucket]:
        """p50 and p95 of customer message → reply, per bucket (nearest rank, in SQL)."""
        rows = self._rows(
            f"WITH {_FINISHED_CTE}, lat AS ("  # noqa: S608
            "  SELECT (CAST(finished_at AS INTEGER) - ?) / ? AS b, "
            "         finished_at - received_at AS latency "
            f"  FROM finished WHERE {_ANSWERED_SQL}"
            "), ranked AS ("
            "  SELECT b, latency, ROW_NUMBER() OVER (PARTITION BY b ORDER BY latency) AS rn, "
            "         COUNT(*) OVER (PARTITION BY b) AS n FROM lat"
            ") SELECT b, MAX(n) AS n, "
            "  MIN(CASE WHEN rn * 100 >= 50 * n THEN latency END) AS p50, "
            "  MIN(CASE WHEN rn * 100 >= 95 * n THEN latency END) AS p95 "
            "FROM ranked GROUP BY b ORDER BY b",
            (buckets.start, buckets.end, buckets.start, buckets.size_s),
        )
        return [
            LatencyBucket(
                start=buckets.start + row["b"] * buckets.size_s,
                replies=row["n"],
                p50_s=row["p50"],
                p95_s=row["p95"],
            )
            for row in rows
        ]

    def window_stats(self, *, since: float, until: float) -> WindowStats:
        """Tiles: the new pipeline's outcomes, rates and latency percentiles in one window."""
        counts = self._rows(
            "SELECT COALESCE(SUM(state = 'sent'), 0) AS sent, "
            "COALESCE(SUM(state = 'handed_off'), 0) AS handed_off, "
            "COALESCE(SUM(state = 'failed'), 0) AS failed, "
            "COALESCE(SUM(state = 'sent' AND used_fallback = 1), 0) AS fallbacks, "
            "COALESCE(SUM(state = 'forwarded'), 0) AS forwarded "
            "FROM reply_jobs WHERE finished_at >= ? AND finished_at < ? AND kind = 'reply'",
            (since, until),
        )[0]
        percentiles = self._rows(
            f"WITH {_FINISHED_CTE}, ranked AS ("  # noqa: S608
            "  SELECT finished_at - received_at AS latency, "
            "         ROW_NUMBER() OVER (ORDER BY finished_at - received_at) AS rn, "
            "         COUNT(*) OVER () AS n "
            f"  FROM finished WHERE {_ANSWERED_SQL}"
            ") SELECT MIN(CASE WHEN rn * 100 >= 50 * n THEN latency END) AS p50, "
            "  MIN(CASE WHEN rn * 100 >= 95 * n THEN latency END) AS p95 FROM ranked",
            (since, until),
        )[0]
        return WindowStats(
            since=since,
            until=until,
            sent=counts["sent"],
            handed_off=counts["handed_off"],
            failed=counts["failed"],
            fallbacks=counts["fallbacks"],
            forwarded=counts["forwarded"],
            p50_s=percentiles["p50"],
            p95_s=percentiles["p95"],
        )

    def n8n_share(self, *, since: float, until: float) -> N8nShare:
        row = self._rows(
            "WITH arrived AS MATERIALIZED (SELECT state, route_reason, received_at, "  # noqa: S608
            "n8n_replied_at FROM reply_jobs WHERE received_at >= ? AND received_at < ? "
            "AND kind = 'reply'), answered AS (SELECT n8n_replied_at - received_at AS latency, "
            "ROW_NUMBER() OVER (ORDER BY n8n_replied_at - received_at) AS rn, "
            "COUNT(*) OVER () AS n FROM arrived WHERE state = 'forwarded' "
            "AND n8n_replied_at IS NOT NULL) "
            "SELECT (SELECT COUNT(*) FROM arrived WHERE state = 'forwarded' "
            "  OR route_reason = 'n8n_silent') AS taken, "
            "(SELECT COUNT(*) FROM answered) AS answered, "
            "(SELECT COUNT(*) FROM arrived WHERE route_reason = 'n8n_silent') AS silent, "
            "(SELECT COUNT(*) FROM arrived WHERE route_reason IN "
            f"  ({_N8N_FAILED_SQL})) AS failed, "
            "(SELECT MIN(CASE WHEN rn * 100 >= 50 * n THEN latency END) FROM answered) AS p50",
            (since, until),
        )[0]
        return N8nShare(
            since=since,
            until=until,
            taken=row["taken"],
            answered=row["answered"],
            silent=row["silent"],
            failed=row["failed"],
            p50_s=row["p50"],
        )

    def traffic(self, buckets: Buckets) -> list[TrafficBucket]:
        """Customer messages per bucket (by arrival) by the system that answers them."""
        rows = self._rows(
            "SELECT (CAST(received_at AS INTEGER) - ?) / ? AS b, "
            "COALESCE(SUM(route = 'new'), 0) AS new, COALESCE(SUM(route = 'n8n'), 0) AS n8n "
            "FROM reply_jobs WHERE received_at >= ? AND received_at < ? AND kind = 'reply' "
            "GROUP BY b",
            (buckets.start, buckets.size_s, buckets.start, buckets.end),
        )
        by_index = {row["b"]: row for row in rows}
        result = []
        for index, start in enumerate(buckets.starts()):
            row = by_index.get(index)
            result.append(TrafficBucket(start, row["new"] if row else 0, row["n8n"] if row else 0))
        return result

    def percentage_steps(self, *, since: float) -> list[PercentageStep]:
        """The configured percentage over time: the value in force at `since`, then every
        change after it (from the rollout audit)."""
        before = self._rows(
            "SELECT at, after FROM rollout_audit WHERE at < ? ORDER BY at DESC, id DESC LIMIT 1",
            (since,),
        )
        after = self._rows(
            "SELECT at, after FROM rollout_audit WHERE at >= ? ORDER BY at, id", (since,)
        )
        steps = [PercentageStep(since, _percentage(row["after"])) for row in before]
        steps.extend(PercentageStep(row["at"], _percentage(row["after"])) for row in after)
        return steps

    # -- brokers -----------------------------------------------------------------------------
    def sample_brokers(self, now: float) -> int:
        """Record every active broker's workload now (the worker calls this once a minute);
        samples older than a week are dropped. Returns the number of samples written."""
        with self._write() as db:
            written = db.execute(
                "INSERT INTO broker_samples (sampled_at, broker_id, workload, capacity) "
                "SELECT ?, id, current_workload, max_concurrent_chats FROM ai_brokers "
                "WHERE is_active = 1 ON CONFLICT (broker_id, sampled_at) DO NOTHING",
                (now,),
            ).rowcount
            db.execute(
                "DELETE FROM broker_samples WHERE sampled_at < ?", (now - SAMPLE_RETENTION_S,)
            )
        return int(written)

    def workload_history(self, *, since: float, max_points: int = 300) -> list[WorkloadSample]:
        """Workload samples since `since`, thinned in SQL to at most ~`max_points` per broker
        (the busiest sample of each slot, so a moment at capacity is never averaged away)."""
        span = self._rows(
            "SELECT MIN(sampled_at) AS first, MAX(sampled_at) AS last FROM broker_samples "
            "WHERE sampled_at >= ?",
            (since,),
        )[0]
        if span["first"] is None:
            return []
        # Integer arithmetic (floor(x) div n == floor(x / n)), as PostgreSQL computes it.
        slot = max(1, int(span["last"] - span["first"]) // max_points + 1)
        start = int(since)
        rows = self._rows(
            "SELECT (CAST(sampled_at AS INTEGER) - ?) / ? AS slot, broker_id, "
            "MAX(workload) AS workload, MAX(capacity) AS capacity FROM broker_samples "
            "WHERE sampled_at >= ? GROUP BY broker_id, slot ORDER BY broker_id, slot",
            (start, slot, since),
        )
        # Every broker's points share the slot grid, so they line up on one time axis.
        return [
            WorkloadSample(
                float(start + row["slot"] * slot),
                row["broker_id"],
                row["workload"],
                row["capacity"],
            )
            for row in rows
        ]

    def broker_activity(self, *, since: float, until: float) -> list[BrokerActivity]:
        rows = self._rows(
            "SELECT broker_id, "
            "COALESCE(SUM(state IN ('sent', 'handed_off')), 0) AS replies, "
            "COALESCE(SUM(state = 'handed_off'), 0) AS handoffs, "
            "COALESCE(SUM(state = 'failed'), 0) AS failures, "
            "COALESCE(SUM(state = 'sent' AND used_fallback = 1), 0) AS fallbacks "
            "FROM reply_jobs WHERE finished_at >= ? AND finished_at < ? "
            "AND broker_id IS NOT NULL AND kind IN ('reply', 'greeting') "
            "GROUP BY broker_id ORDER BY broker_id",
            (since, until),
        )
        return [_record(BrokerActivity, row) for row in rows]

    def broker_conversations(self) -> list[BrokerConversations]:
        rows = self._rows(
            "SELECT broker_id, COALESCE(SUM(status = 'bot'), 0) AS bot, "
            "COALESCE(SUM(status = 'handed_off'), 0) AS handed_off, "
            "COALESCE(SUM(status = 'human'), 0) AS human "
            "FROM broker_conversations GROUP BY broker_id ORDER BY broker_id"
        )
        return [_record(BrokerConversations, row) for row in rows]

    def broker_replies(self, buckets: Buckets) -> list[BrokerReplies]:
        rows = self._rows(
            "SELECT (CAST(finished_at AS INTEGER) - ?) / ? AS b, broker_id, COUNT(*) AS n "
            "FROM reply_jobs WHERE finished_at >= ? AND finished_at < ? "
            "AND state IN ('sent', 'handed_off') AND broker_id IS NOT NULL "
            "GROUP BY b, broker_id ORDER BY b, broker_id",
            (buckets.start, buckets.size_s, buckets.start, buckets.end),
        )
        return [
            BrokerReplies(buckets.start + row["b"] * buckets.size_s, row["broker_id"], row["n"])
            for row in rows
        ]

    # -- the ledger --------------------------------------------------------------------------
    def search_jobs(self, query: JobFilter, *, offset: int = 0, limit: int = 50) -> JobPage:
        where, params = _job_where(query)
        total = self._rows(f"SELECT COUNT(*) AS n FROM reply_jobs {where}", params)[0]["n"]  # noqa: S608
        rows = self._rows(
            "SELECT id, seq, kind, state, route, conversation_id, broker_id, attempts, "  # noqa: S608
            "received_at, finished_at, used_fallback, "
            "SUBSTR(inbound_content, 1, ?) AS message, SUBSTR(error, 1, ?) AS error "
            f"FROM reply_jobs {where} ORDER BY seq DESC LIMIT ? OFFSET ?",
            (LIST_TEXT_CHARS, LIST_TEXT_CHARS, *params, limit, offset),
        )
        return JobPage(
            rows=tuple(
                JobRow(**{**dict(row), "used_fallback": bool(row["used_fallback"])}) for row in rows
            ),
            total=int(total),
            offset=offset,
            limit=limit,
        )

    def job_detail(self, job_id: str) -> JobDetail | None:
        rows = self._rows("SELECT * FROM reply_jobs WHERE id = ?", (job_id,))
        if not rows:
            return None
        merged = self._rows(
            "SELECT id, received_at, inbound_content FROM reply_jobs WHERE merged_into = ? "
            "ORDER BY seq",
            (job_id,),
        )
        names = {f.name for f in fields(JobDetail)} - {"merged"}
        row = rows[0]
        values = {name: row[name] for name in names}
        values["used_fallback"] = bool(values["used_fallback"])
        return JobDetail(
            **values,
            merged=tuple(
                MergedMessage(m["id"], m["received_at"], m["inbound_content"]) for m in merged
            ),
        )

    # -- shadow comparisons ------------------------------------------------------------------
    def comparisons(
        self, query: ComparisonFilter, *, offset: int = 0, limit: int = 20
    ) -> ComparisonPage:
        where, params = _comparison_where(query)
        total = self._rows(f"SELECT COUNT(*) AS n FROM shadow_comparisons {where}", params)  # noqa: S608
        rows = self._rows(
            f"SELECT * FROM shadow_comparisons {where} ORDER BY id DESC LIMIT ? OFFSET ?",  # noqa: S608
            (*params, limit, offset),
        )
        return ComparisonPage(tuple(comparison_from_row(row) for row in rows), int(total[0]["n"]))

    def comparison_summary(self, query: ComparisonFilter) -> ComparisonSummary:
        where, params = _comparison_where(query)
        row = self._rows(
            "SELECT COUNT(*) AS total, COUNT(similarity) AS complete, "  # noqa: S608
            "COUNT(verdict) AS rated, COALESCE(SUM(verdict = 'better'), 0) AS better, "
            "COALESCE(SUM(verdict = 'same'), 0) AS same, "
            "COALESCE(SUM(verdict = 'worse'), 0) AS worse, "
            "AVG(similarity) AS avg_similarity, "
            "COALESCE(SUM(similarity < 0.5), 0) AS below_half, "
            "AVG(shadow_latency_ms) AS avg_new_latency_ms, "
            "AVG(n8n_latency_ms) AS avg_n8n_latency_ms "
            f"FROM shadow_comparisons {where}",
            params,
        )[0]
        bins = self._rows(
            f"SELECT MIN(CAST(similarity * {HISTOGRAM_BINS} AS INTEGER), {HISTOGRAM_BINS - 1}) "  # noqa: S608
            f"AS bin, COUNT(*) AS n FROM shadow_comparisons {where} "
            f"{'AND' if where else 'WHERE'} similarity IS NOT NULL GROUP BY bin",
            params,
        )
        histogram = [0] * HISTOGRAM_BINS
        for item in bins:
            histogram[int(item["bin"])] = int(item["n"])
        values = dict(row)
        for name in ("avg_similarity", "avg_new_latency_ms", "avg_n8n_latency_ms"):
            values[name] = rounded_mean(values[name])
        return ComparisonSummary(**values, histogram=tuple(histogram))

    def export_comparisons(
        self, query: ComparisonFilter, *, limit: int = EXPORT_LIMIT
    ) -> list[Comparison]:
        where, params = _comparison_where(query)
        rows = self._rows(
            f"SELECT * FROM shadow_comparisons {where} ORDER BY id DESC LIMIT ?",  # noqa: S608
            (*params, limit),
        )
        return [comparison_from_row(row) for row in rows]

    def comparison_bounds(self) -> tuple[float, float] | None:
        """When the first and the last comparison arrived (the date filter's range)."""
        row = self._rows(
            "SELECT MIN(received_at) AS first, MAX(received_at) AS last FROM shadow_comparisons"
        )[0]
        return None if row["first"] is None else (row["first"], row["last"])

    # -- operator actions --------------------------------------------------------------------
    def record_operator_action(
        self, *, actor: str, action: str, target: str, reason: str, now: float
    ) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO operator_actions (at, actor, action, target, reason) "
                "VALUES (?, ?, ?, ?, ?)",
                (now, actor, action, target, reason),
            )

    def operator_actions(
        self, *, target: str | None = None, limit: int = 50
    ) -> list[OperatorAction]:
        if target is None:
            rows = self._rows("SELECT * FROM operator_actions ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = self._rows(
                "SELECT * FROM operator_actions WHERE target = ? ORDER BY id DESC LIMIT ?",
                (target, limit),
            )
        return [_record(OperatorAction, row) for row in rows]


# -- helpers -----------------------------------------------------------------------------------
def _record(kind: type[_T], row: sqlite3.Row) -> _T:
    return kind(**{key: row[key] for key in row.keys()})  # noqa: SIM118 - sqlite3.Row


def _percentage(after_json: str) -> int:
    return int(json.loads(after_json).get("percentage", 0))


def _job_where(query: JobFilter) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for column, values in (("state", query.states), ("kind", query.kinds), ("route", query.routes)):
        if values:
            clauses.append(f"{column} IN ({', '.join('?' for _ in values)})")
            params.extend(values)
    for clause, value in (
        ("conversation_id = ?", query.conversation_id),
        ("broker_id = ?", query.broker_id),
        ("received_at >= ?", query.since),
        ("received_at < ?", query.until),
    ):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    text = search_text(query)
    if text:
        # A job id, or its first characters, or words of the customer's message.
        clauses.append("(id LIKE ? ESCAPE '\\' OR inbound_content LIKE ? ESCAPE '\\')")
        params.extend([f"{_escape_like(text)}%", f"%{_escape_like(text)}%"])
    return (f"WHERE {' AND '.join(clauses)}" if clauses else "", params)


def _comparison_where(query: ComparisonFilter) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for clause, value in (
        ("received_at >= ?", query.since),
        ("received_at < ?", query.until),
        ("broker_id = ?", query.broker_id),
        ("similarity <= ?", query.max_similarity),
    ):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    if query.unrated:
        clauses.append("verdict IS NULL")
    return (f"WHERE {' AND '.join(clauses)}" if clauses else "", params)


def rounded_mean(value: float | None) -> float | None:
    """An average as every backend reports it: MEAN_DIGITS significant digits."""
    return None if value is None else float(f"{value:.{MEAN_DIGITS}g}")


def search_text(query: JobFilter) -> str | None:
    """The job search's text, trimmed; None when there is nothing to search for."""
    return (query.text or "").strip() or None


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
