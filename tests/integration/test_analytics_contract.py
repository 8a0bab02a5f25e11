"""The console's analytics give the same records on every store.

One seeded ledger (console/seed.py, a few thousand jobs and 1,200 comparisons) is written to
SQLite and copied row for row into PostgreSQL; every read of the `Analytics` port is then asked
of SQLite, of PostgreSQL over psycopg and of PostgreSQL over supabase-py and the PostgREST
sandbox (which caps table reads at 1,000 rows as Supabase does), and the answers must be equal.
Some timestamps are moved half a second either side of a bucket edge, where PostgreSQL's CAST
rounds and SQLite's truncates, and the ledger holds more rows than one REST page.
"""

from __future__ import annotations

import dataclasses
import math
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from supabase import ClientOptions, create_client

from app.domain.personas import PERSONAS
from app.sandbox.postgrest import PostgrestSandbox
from app.store.analytics import (
    Analytics,
    Buckets,
    ComparisonFilter,
    JobFilter,
    SqliteAnalytics,
)
from app.store.analytics_postgres import PostgresAnalytics
from app.store.psycopg_rpc import create_postgres_rpc
from app.store.sqlite import SqliteStore
from app.store.supabase import PostgrestRpc
from console.seed import SeedPlan, seed_store
from tests.support.postgres import (
    SERVICE_ROLE,
    require_postgres,
    service_key,
    temporary_database,
)
from tests.support.store_copy import copy_sqlite_store

NOW = 1_800_000_000.25  # a fixed clock, a quarter second past a bucket edge
HOUR = 3600
PLAN = SeedPlan(jobs=4_000, comparisons=1_200, hours=2.0, live=True, random_seed=11)

# Half a second either side of a minute's edge: where rounding and truncation part.
EDGES = """
UPDATE reply_jobs SET
  finished_at = CAST(finished_at / 60 AS INTEGER) * 60
                + (CASE rowid % 2 WHEN 0 THEN -0.5 ELSE 0.5 END),
  received_at = CAST(finished_at / 60 AS INTEGER) * 60
                - (CASE rowid % 3 WHEN 0 THEN 1.5 ELSE 0.5 END)
WHERE finished_at IS NOT NULL AND rowid % 5 = 0
"""
COMPARISON_EDGES = """
UPDATE shadow_comparisons SET
  received_at = CAST(received_at / 300 AS INTEGER) * 300
                + (CASE id % 2 WHEN 0 THEN -0.5 ELSE 0.5 END)
WHERE id % 4 = 0
"""


# n8n's share: most forwarded messages answered 2-8 s later, every tenth silent (the watchdog
# handed it to the new pipeline).
N8N_OUTCOMES = (
    "UPDATE reply_jobs SET n8n_replied_at = received_at + 2 + (seq % 7) "
    "WHERE state = 'forwarded' AND seq % 10 <> 0",
    "UPDATE reply_jobs SET state = 'queued', route = 'new', route_reason = 'n8n_silent', "
    "finished_at = NULL WHERE state = 'forwarded' AND seq % 10 = 0",
)


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("analytics") / "store.db"
    seed_store(path, PLAN, now=NOW)
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute(EDGES)
        db.execute(COMPARISON_EDGES)
        for statement in N8N_OUTCOMES:
            db.execute(statement)
    finally:
        db.close()
    return path


@pytest.fixture(scope="module")
def template(ledger: Path) -> Iterator[str]:
    require_postgres()
    with temporary_database() as dsn:
        copy_sqlite_store(ledger, dsn)
        yield dsn


def _sqlite(path: Path, dsn: str) -> tuple[Analytics, Callable[[], None]]:
    analytics = SqliteAnalytics(path)
    return analytics, analytics.close


def _postgres(path: Path, dsn: str) -> tuple[Analytics, Callable[[], None]]:
    analytics = PostgresAnalytics(create_postgres_rpc(dsn, pool_size=2))
    return analytics, analytics.close


def _supabase(path: Path, dsn: str) -> tuple[Analytics, Callable[[], None]]:
    key = service_key()
    sandbox = PostgrestSandbox(dsn, service_key=key, db_role=SERVICE_ROLE, pool_size=2)
    sandbox.__enter__()
    http = httpx.Client(timeout=10.0)
    client = create_client(sandbox.url, key, ClientOptions(httpx_client=http))
    analytics = PostgresAnalytics(PostgrestRpc(client))

    def close() -> None:
        analytics.close()
        http.close()
        sandbox.__exit__(None, None, None)

    return analytics, close


OPENERS = {"sqlite": _sqlite, "postgres": _postgres, "supabase": _supabase}


@pytest.fixture(scope="module")
def reference(ledger: Path) -> Iterator[Analytics]:
    analytics = SqliteAnalytics(ledger)
    yield analytics
    analytics.close()


@pytest.fixture(scope="module", params=["postgres", "supabase"])
def other(request: pytest.FixtureRequest, ledger: Path, template: str) -> Iterator[Analytics]:
    analytics, close = OPENERS[request.param](ledger, template)
    try:
        yield analytics
    finally:
        close()


def plain(value: Any) -> Any:
    """A record as nested builtins, floats to 1 µs (the two databases' float text differs)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 6)
    return value


def first_broker(analytics: Analytics) -> str:
    brokers = analytics.broker_conversations()
    return brokers[0].broker_id if brokers else "no-broker"


MINUTES = Buckets.ending_at(NOW, span_s=2 * HOUR, size_s=60)
FIVE_MINUTES = Buckets.ending_at(NOW, span_s=3 * HOUR, size_s=300)
SINCE = NOW - 2 * HOUR

READS: dict[str, Callable[[Analytics], Any]] = {
    "state_counts": lambda a: a.state_counts(),
    "overdue": lambda a: a.overdue(now=NOW),
    "unsent_replies": lambda a: a.unsent_replies(),
    "workers": lambda a: a.workers(),
    "outcomes by minute": lambda a: a.outcomes(MINUTES),
    "outcomes by five minutes": lambda a: a.outcomes(FIVE_MINUTES),
    "latencies by minute": lambda a: a.latencies(MINUTES),
    "latencies by five minutes": lambda a: a.latencies(FIVE_MINUTES),
    "window_stats": lambda a: a.window_stats(since=NOW - HOUR - 0.5, until=NOW - 0.5),
    "n8n_share": lambda a: a.n8n_share(since=SINCE, until=NOW),
    "n8n_share, last hour": lambda a: a.n8n_share(since=NOW - HOUR - 0.5, until=NOW - 0.5),
    "traffic by minute": lambda a: a.traffic(MINUTES),
    "percentage_steps": lambda a: a.percentage_steps(since=SINCE),
    "workload_history": lambda a: a.workload_history(since=SINCE, max_points=50),
    "broker_activity": lambda a: a.broker_activity(since=SINCE, until=NOW),
    "broker_conversations": lambda a: a.broker_conversations(),
    "broker_replies": lambda a: a.broker_replies(FIVE_MINUTES),
    "search_jobs first page": lambda a: a.search_jobs(JobFilter()),
    "search_jobs past one REST page": lambda a: a.search_jobs(JobFilter(), offset=1_150, limit=50),
    "search_jobs by state and route": lambda a: a.search_jobs(
        JobFilter(states=("sent", "handed_off"), routes=("new",), since=SINCE + 600), limit=200
    ),
    "search_jobs by words": lambda a: a.search_jobs(JobFilter(text="rate"), limit=100),
    "search_jobs by broker": lambda a: a.search_jobs(JobFilter(broker_id=first_broker(a))),
    "comparisons": lambda a: a.comparisons(ComparisonFilter(), offset=1_000, limit=20),
    "comparisons below a similarity": lambda a: a.comparisons(
        ComparisonFilter(max_similarity=0.4, since=SINCE), limit=50
    ),
    "comparison_summary": lambda a: a.comparison_summary(ComparisonFilter()),
    "comparison_summary unrated": lambda a: a.comparison_summary(ComparisonFilter(unrated=True)),
    "export_comparisons": lambda a: a.export_comparisons(ComparisonFilter()),
    "comparison_bounds": lambda a: a.comparison_bounds(),
    "operator_actions": lambda a: a.operator_actions(limit=200),
}


@pytest.mark.parametrize("read", list(READS))
def test_every_read_gives_the_same_records_as_sqlite(
    read: str, reference: Analytics, other: Analytics
) -> None:
    expected = plain(READS[read](reference))
    assert plain(READS[read](other)) == expected


def test_the_ledger_is_big_enough_to_tell_paging_from_a_cap(reference: Analytics) -> None:
    assert reference.search_jobs(JobFilter()).total > 2_000
    assert len(reference.export_comparisons(ComparisonFilter())) == PLAN.comparisons
    page = reference.search_jobs(JobFilter(), offset=1_150, limit=50)
    assert len(page.rows) == 50
    # The moved timestamps reach both sides of an edge, so the bucket tests can fail.
    minutes = reference.outcomes(MINUTES)
    assert sum(b.sent + b.handed_off + b.failed for b in minutes) > 500
    # n8n's share has every outcome, so its counts and its median can differ between stores.
    share = reference.n8n_share(since=SINCE, until=NOW)
    assert share.taken > share.answered > share.silent > 0 and share.failed > 0
    assert share.p50_s is not None and 2 <= share.p50_s <= 8


def test_job_detail_is_the_same_for_each_kind_of_job(
    reference: Analytics, other: Analytics
) -> None:
    rows = reference.search_jobs(JobFilter(), limit=400).rows
    picked = {row.state: row.id for row in rows}  # one job of each state
    assert len(picked) >= 3
    for job_id in picked.values():
        assert plain(other.job_detail(job_id)) == plain(reference.job_detail(job_id))
    assert other.job_detail("no-such-job") is None


@pytest.mark.parametrize("backend", list(OPENERS))
def test_writes_read_back_the_same_on_every_store(
    backend: str, ledger: Path, tmp_path: Path
) -> None:
    require_postgres()
    path = tmp_path / "store.db"
    path.write_bytes(ledger.read_bytes())
    with temporary_database() as dsn:
        copy_sqlite_store(ledger, dsn)
        analytics, close = OPENERS[backend](path, dsn)
        try:
            sampled = analytics.sample_brokers(NOW + 30)
            assert sampled == len(PERSONAS)
            history = analytics.workload_history(since=NOW + 29, max_points=10)
            assert {s.broker_id for s in history} == {
                b.broker_id for b in analytics.broker_conversations()
            }
            analytics.record_operator_action(
                actor="ops@example.com",
                action="cancel",
                target="job-1",
                reason="duplicate",
                now=NOW + 31,
            )
            action = analytics.operator_actions(target="job-1", limit=1)[0]
            assert (action.actor, action.action, action.reason) == (
                "ops@example.com",
                "cancel",
                "duplicate",
            )
            # A week later, the samples of a week ago are dropped.
            analytics.sample_brokers(NOW + 8 * 86400)
            assert analytics.workload_history(
                since=NOW, max_points=10
            ) == analytics.workload_history(since=NOW + 8 * 86400 - 1, max_points=10)
        finally:
            close()


def test_an_empty_store_answers_every_read_alike(tmp_path: Path) -> None:
    require_postgres()
    path = tmp_path / "empty.db"
    SqliteStore(path).init_schema()
    answers: dict[str, dict[str, Any]] = {}
    with temporary_database() as dsn:
        for backend, opener in OPENERS.items():
            analytics, close = opener(path, dsn)
            try:
                answers[backend] = {read: plain(ask(analytics)) for read, ask in READS.items()}
            finally:
                close()
    assert answers["sqlite"]["comparison_bounds"] is None
    assert answers["sqlite"]["search_jobs first page"]["total"] == 0
    assert answers["postgres"] == answers["sqlite"]
    assert answers["supabase"] == answers["sqlite"]
