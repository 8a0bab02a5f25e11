"""Overview: queue depth, last-hour tiles, charts, workers and alerts over a seeded store."""

from __future__ import annotations

import time
from collections.abc import Callable

from streamlit.testing.v1 import AppTest

from app.store.base import Store
from app.store.models import WorkerHeartbeat
from tests.console.conftest import no_failures, table


def metric(app: AppTest, label: str) -> str:
    return next(m.value for m in app.metric if m.label == label)


def beat(store: Store, worker: str, seen_at: float) -> None:
    store.heartbeat(WorkerHeartbeat(worker, "host", 1, 32, seen_at - 3600, seen_at))


def test_overview_shows_the_queue_the_last_hour_and_the_workers(
    console: Callable[..., AppTest], store: Store, sql: Callable[..., None]
) -> None:
    # The seeded workers stopped long ago; one beats now.
    sql("UPDATE worker_heartbeats SET seen_at = seen_at - 86400")
    beat(store, "worker-a:4121", time.time())
    app = console()
    no_failures(app)
    assert [t.value for t in app.title] == ["Overview"]
    states = store.job_state_counts()
    assert metric(app, "Running") == f"{states['running']:,}"
    assert metric(app, "Workers alive") == "1"
    assert metric(app, "Ready to run") == "0"  # nothing enqueued on Huey in a seeded store
    for label in ("Replies", "Failure rate", "Latency p50", "Latency p95", "Handoff rate"):
        assert metric(app, label) != ""
    assert len(app.get("plotly_chart")) == 3  # throughput, latency, ledger by state
    workers = table(app, "last heartbeat")
    assert set(workers["status"]) == {"alive", "stopped"}
    assert any("At capacity: Michelle Chen" in i.value for i in app.info)


def test_overview_alerts_when_replies_wait_and_no_worker_is_alive(
    console: Callable[..., AppTest], store: Store, sql: Callable[..., None]
) -> None:
    sql("UPDATE worker_heartbeats SET seen_at = seen_at - 86400")  # every worker stopped
    app = console()
    assert metric(app, "Workers alive") == "0"
    assert any("No worker is alive and replies are waiting" in e.value for e in app.error)
    assert not app.exception


def test_overview_on_an_empty_store_says_what_to_do(
    console: Callable[..., AppTest], store: Store, sql: Callable[..., None]
) -> None:
    for emptied in ("reply_jobs", "worker_heartbeats", "shadow_comparisons"):
        sql(f"DELETE FROM {emptied}")
    app = console()
    assert not app.exception
    texts = [i.value for i in app.info]
    assert any("No jobs yet" in t for t in texts)
    assert any("No worker has ever started" in t for t in texts)
    assert any("No worker is alive" in w.value for w in app.warning)
