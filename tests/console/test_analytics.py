"""SqliteAnalytics: the console's SQL aggregates, checked against hand-made ledgers."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.domain.personas import PERSONAS
from app.store.analytics import Buckets, ComparisonFilter, JobFilter, SqliteAnalytics
from app.store.sqlite import SqliteStore
from console.seed import SeedPlan, seed_store

NOW = 1_800_000_000.0  # a fixed clock, aligned to the hour


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "store.db")
    opened.init_schema()
    opened.seed_brokers(PERSONAS, max_concurrent_chats=10)
    yield opened
    opened.close()


@pytest.fixture
def analytics(store: SqliteStore) -> Iterator[SqliteAnalytics]:
    opened = SqliteAnalytics(store._path)
    yield opened
    opened.close()


def job(store: SqliteStore, **values: Any) -> str:
    row = {
        "id": uuid.uuid4().hex,
        "kind": "reply",
        "conversation_id": 1,
        "state": "sent",
        "route": "new",
        "received_at": NOW - 100,
        "updated_at": NOW,
        **values,
    }
    with store._write() as db:
        db.execute(
            f"INSERT INTO reply_jobs ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})",
            tuple(row.values()),
        )
    return str(row["id"])


def test_buckets_end_on_a_bucket_edge() -> None:
    cut = Buckets.ending_at(NOW + 125, span_s=3600, size_s=300)
    assert cut.end % 300 == 0 and cut.end > NOW + 125 and cut.count == 12
    assert cut.starts()[0] == cut.start and cut.starts()[-1] == cut.end - 300


def test_outcomes_count_finished_jobs_per_bucket(
    store: SqliteStore, analytics: SqliteAnalytics
) -> None:
    cut = Buckets(start=int(NOW) - 600, end=int(NOW), size_s=300)
    for state in ("sent", "sent", "failed", "handed_off", "forwarded", "merged", "recorded"):
        job(store, state=state, finished_at=NOW - 400)
    job(store, state="sent", finished_at=NOW - 10)
    job(store, state="sent", finished_at=NOW - 3600)  # outside the range
    first, second = analytics.outcomes(cut)
    assert (first.sent, first.failed, first.handed_off, first.forwarded) == (2, 1, 1, 1)
    assert (first.other, first.shadow) == (1, 1)
    assert first.failure_rate == pytest.approx(1 / 4)
    assert (second.sent, second.failure_rate) == (1, 0.0)


def test_latency_percentiles_are_nearest_rank(
    store: SqliteStore, analytics: SqliteAnalytics
) -> None:
    latencies = list(range(1, 21))  # 1..20 s
    for seconds in latencies:
        job(store, received_at=NOW - 50 - seconds, finished_at=NOW - 50)
    job(store, kind="shadow", state="recorded", received_at=NOW - 500, finished_at=NOW - 50)
    job(store, route="n8n", state="forwarded", received_at=NOW - 500, finished_at=NOW - 50)
    [bucket] = analytics.latencies(Buckets(start=int(NOW) - 300, end=int(NOW), size_s=300))
    rank = lambda q: latencies[math.ceil(q * len(latencies)) - 1]  # noqa: E731
    assert bucket.replies == 20
    assert bucket.p50_s == pytest.approx(rank(0.5))
    assert bucket.p95_s == pytest.approx(rank(0.95))
    stats = analytics.window_stats(since=NOW - 300, until=NOW)
    assert (stats.p50_s, stats.p95_s) == (pytest.approx(10), pytest.approx(19))
    assert (stats.sent, stats.forwarded, stats.failure_rate) == (20, 1, 0.0)


def test_window_rates(store: SqliteStore, analytics: SqliteAnalytics) -> None:
    for _ in range(6):
        job(store, finished_at=NOW - 10)
    job(store, finished_at=NOW - 10, used_fallback=1)
    job(store, finished_at=NOW - 10, state="handed_off")
    job(store, finished_at=NOW - 10, state="failed")
    job(store, finished_at=NOW - 10, state="failed")
    stats = analytics.window_stats(since=NOW - 60, until=NOW)
    assert stats.finished == 10
    assert stats.failure_rate == pytest.approx(0.2)
    assert stats.fallback_rate == pytest.approx(1 / 7)
    assert stats.handoff_rate == pytest.approx(1 / 8)


def test_traffic_share_by_route(store: SqliteStore, analytics: SqliteAnalytics) -> None:
    for route in ("new", "n8n", "n8n", "n8n"):
        job(store, route=route, received_at=NOW - 30)
    job(store, kind="shadow", route="n8n", received_at=NOW - 30)  # not a customer reply
    [bucket] = analytics.traffic(Buckets(start=int(NOW) - 60, end=int(NOW), size_s=60))
    assert (bucket.new, bucket.n8n, bucket.new_share) == (1, 3, 0.25)


def test_search_filters_and_pages(store: SqliteStore, analytics: SqliteAnalytics) -> None:
    ids = [
        job(store, conversation_id=7, inbound_content=f"message {i} about 100% LTV_cap")
        for i in range(5)
    ]
    failed = job(store, state="failed", conversation_id=8, error="APITimeoutError: x")
    page = analytics.search_jobs(JobFilter(), offset=0, limit=2)
    assert page.total == 6 and [r.id for r in page.rows] == [failed, ids[-1]]
    second = analytics.search_jobs(JobFilter(), offset=2, limit=2)
    assert [r.id for r in second.rows] == [ids[3], ids[2]]
    assert analytics.search_jobs(JobFilter(states=("failed",))).total == 1
    assert analytics.search_jobs(JobFilter(conversation_id=7)).total == 5
    assert analytics.search_jobs(JobFilter(text=failed[:8])).rows[0].id == failed
    assert analytics.search_jobs(JobFilter(text="100% LTV_c")).total == 5  # LIKE escaped
    assert analytics.search_jobs(JobFilter(text="10_%")).total == 0
    assert analytics.search_jobs(JobFilter(since=NOW)).total == 0


def test_job_detail_includes_traceback_payload_and_merged_messages(
    store: SqliteStore, analytics: SqliteAnalytics
) -> None:
    main = job(store, error_detail="Traceback (most recent call last): ...", inbound_payload="{}")
    job(store, state="merged", merged_into=main, inbound_content="and one more thing")
    detail = analytics.job_detail(main)
    assert detail is not None
    assert detail.error_detail == "Traceback (most recent call last): ..."
    assert detail.inbound_payload == "{}"
    assert [m.content for m in detail.merged] == ["and one more thing"]
    assert analytics.job_detail("nope") is None


def test_broker_samples_are_written_and_thinned(
    store: SqliteStore, analytics: SqliteAnalytics
) -> None:
    for minute in range(120):
        assert analytics.sample_brokers(NOW - 7200 + minute * 60) == len(PERSONAS)
    history = analytics.workload_history(since=NOW - 7200, max_points=30)
    per_broker = [s for s in history if s.broker_id == PERSONAS[0].slug]
    assert 25 <= len(per_broker) <= 31
    assert {s.capacity for s in history} == {10}
    analytics.sample_brokers(NOW + 8 * 86400)  # a week later: the old samples are dropped
    assert len(analytics.workload_history(since=0)) == len(PERSONAS)


def test_unsent_replies_match_what_a_rollback_cancels(
    store: SqliteStore, analytics: SqliteAnalytics
) -> None:
    job(store, state="queued")
    job(store, state="waiting")
    job(store, state="running")
    job(store, state="running", send_started_at=NOW)  # already sending: not cancelled
    job(store, state="queued", kind="greeting")
    job(store, state="forwarding", route="n8n")
    assert analytics.unsent_replies() == 3
    assert len(store.cancel_unsent_replies(reason="test", now=NOW)) == 3


def test_comparison_summary_and_filters(tmp_path: Path) -> None:
    path = tmp_path / "seeded.db"
    seed_store(path, SeedPlan(jobs=2_000, comparisons=200))
    analytics = SqliteAnalytics(path)
    store = SqliteStore(path)
    try:
        every = store.list_comparisons(limit=1000)
        summary = analytics.comparison_summary(ComparisonFilter())
        assert summary.total == len(every) == 200
        assert summary.rated == sum(c.verdict is not None for c in every)
        assert summary.better + summary.same + summary.worse == summary.rated
        assert sum(summary.histogram) == summary.complete
        low = analytics.comparisons(ComparisonFilter(max_similarity=0.4999), limit=1000)
        assert low.total == sum(c.similarity is not None and c.similarity < 0.5 for c in every)
        unrated = analytics.comparisons(ComparisonFilter(unrated=True), limit=5)
        assert all(c.verdict is None for c in unrated.rows)
        assert len(analytics.export_comparisons(ComparisonFilter())) == 200
    finally:
        analytics.close()
        store.close()


def test_seeded_day_looks_like_production(tmp_path: Path) -> None:
    path = tmp_path / "seeded.db"
    summary = seed_store(path, SeedPlan(jobs=6_000, comparisons=600))
    assert 5_700 <= summary.jobs <= 6_300 and summary.comparisons == 600
    store = SqliteStore(path)
    try:
        states = store.job_state_counts()
        assert {"sent", "failed", "handed_off", "forwarded", "recorded", "waiting"} <= set(states)
        assert states["failed"] < states["sent"] / 10
        assert [e.action for e in store.audit_log(limit=100)][-1] == "set_rollout"
        assert any(e.automatic for e in store.audit_log(limit=100))
        brokers = {b.id: b for b in store.list_brokers()}
        assert brokers["michelle-chen"].at_capacity
    finally:
        store.close()
