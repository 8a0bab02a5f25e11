"""The pure parts of the console: alert rules, filters, formatting, escaping, the word diff and
the chart builders."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import plotly.graph_objects as go
import pytest

from app.domain.circuit import Circuit, CircuitPosition
from app.domain.health import PipelineHealth
from app.domain.rollout import RolloutState
from app.store.analytics import (
    Buckets,
    ComparisonSummary,
    LatencyBucket,
    OutcomeBucket,
    PercentageStep,
    TrafficBucket,
    WorkerStatus,
    WorkloadSample,
)
from app.store.models import AuditEntry
from console import charts, data, widgets

NOW = 1_800_000_000.0
HEALTHY = PipelineHealth(600, 100, 0, 95, 1, 5.0, 9.0, 0, 1)
ALIVE = WorkerStatus("w1", "host", 1, 32, NOW - 60, NOW - 2)


def status(**changes: object) -> data.Status:
    base = data.Status(
        now=NOW,
        rollout=RolloutState(percentage=50, shadow=True),
        description="",
        recommendations=(),
        n8n_configured=True,
        circuit=Circuit(),
        health=HEALTHY,
        guard_verdict=None,
        depth=data.QueueDepth(0, 0),
        states={"sent": 100},
        overdue=0,
        workers=(ALIVE,),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def titles(found: list[data.Alert]) -> list[tuple[str, str]]:
    return [(a.level, a.title) for a in found]


def test_a_healthy_system_has_no_alerts() -> None:
    assert data.alerts(status()) == []


def test_no_worker_with_waiting_replies_is_critical() -> None:
    stale = replace(ALIVE, seen_at=NOW - 120)
    found = data.alerts(status(workers=(stale,), states={"waiting": 4}))
    assert titles(found) == [("critical", "No worker is alive and replies are waiting")]
    assert titles(data.alerts(status(workers=()))) == [("warning", "No worker is alive")]


def test_guard_backlog_circuit_pause_and_failures() -> None:
    found = data.alerts(
        status(
            guard_verdict="failure rate 9% over 40 replies exceeds 5%",
            overdue=45,
            circuit=Circuit(position=CircuitPosition.OPEN, consecutive_failures=5),
            rollout=RolloutState(percentage=50, queue_paused=True, updated_by="console:x"),
        )
    )
    assert [a.level for a in found] == ["critical", "warning", "warning", "warning"]
    assert "45 replies are overdue" in found[1].title
    assert "open" in found[2].title
    failing = replace(HEALTHY, failed=4, finished=100)
    assert titles(data.alerts(status(health=failing))) == [
        ("warning", "Failure rate 4.0% in the last 10 min")
    ]
    assert data.alerts(status(health=replace(HEALTHY, failed=1, finished=20))) == []


def test_a_full_broker_is_reported() -> None:
    row = data.BrokerRow(
        "michelle-chen",
        "Michelle Chen",
        "t",
        "aggressive",
        True,
        12,
        12,
        1,
        1,
        0,
        0,
        1,
        0,
        1,
        0,
        0,
        0,
    )
    assert titles(data.alerts(status(), [row])) == [("info", "At capacity: Michelle Chen")]


def test_job_filter_from_the_page_inputs() -> None:
    query = data.job_filter(
        states=["failed"], conversation="#123", text=" ltv ", since_s=3600, now=NOW + 30
    )
    assert (query.states, query.conversation_id, query.text) == (("failed",), 123, "ltv")
    assert query.since == NOW - 3600  # rounded to the minute: one cache entry per minute
    assert data.job_filter(conversation="abc").text == "abc"
    assert data.job_filter().since is None


def test_audit_change_in_words() -> None:
    entry = AuditEntry(
        1,
        NOW,
        "a",
        "set_rollout",
        {"percentage": 25, "shadow": False},
        {"percentage": 50, "shadow": True},
        "r",
        False,
        None,
    )
    assert data.audit_change(entry) == "25 % → 50 %, shadow on"


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, "—"), (0.42, "420 ms"), (4.25, "4.2 s"), (185, "3 min 5 s"), (7800, "2 h 10 min")],
)
def test_seconds_for_humans(value: float | None, text: str) -> None:
    assert widgets.seconds(value) == text


def test_counts_percent_and_ago() -> None:
    assert widgets.count(1234567) == "1,234,567"
    assert widgets.percent(0.0123) == "1.2 %"
    assert widgets.percent(None) == "—"
    assert widgets.ago(NOW - 2, NOW) == "just now"
    assert widgets.ago(NOW - 150, NOW) == "2 min ago"
    assert widgets.ago(NOW - 3 * 86400, NOW) == "3 d ago"


def test_untrusted_text_cannot_inject_markdown() -> None:
    text = "About S$280k ![x](http://evil/p.png) <b>hi</b> **bold** [link](http://x)"
    escaped = widgets.plain(text)
    for raw in ("![", "](", "<b>", "**", "S$"):
        assert raw not in escaped
    assert "S\\$280k" in escaped


def test_word_diff_marks_changes_and_escapes() -> None:
    html = widgets.word_diff_html("Hi <Tan> rates are 2.6%", "Hi <Tan> rates are 2.5%")
    assert "&lt;Tan&gt;" in html and "<Tan>" not in html
    assert '<del class="diff-del">2.6%</del>' in html
    assert '<ins class="diff-ins">2.5%</ins>' in html


def test_chart_builders_return_figures() -> None:
    tz = dt.UTC
    cut = Buckets(start=int(NOW) - 600, end=int(NOW), size_s=300)
    figures = [
        charts.throughput([OutcomeBucket(s, sent=3, failed=1) for s in cut.starts()], tz),
        charts.latency([LatencyBucket(cut.start, 10, 4.0, 9.0)], tz, guard_p95_s=20),
        charts.traffic_share(
            [TrafficBucket(cut.start, 1, 3)], [PercentageStep(cut.start, 25)], tz, end=NOW
        ),
        charts.workload([WorkloadSample(NOW, "michelle-chen", 12, 12)], {}, tz),
        charts.state_counts({"sent": 100, "failed": 3}),
        charts.similarity_histogram(
            ComparisonSummary(10, 10, 4, 2, 1, 1, 0.5, 3, 5000.0, 3000.0, (1,) * 10)
        ),
    ]
    assert all(isinstance(f, go.Figure) and f.data for f in figures)
    heat = figures[3].data[0]
    assert heat.z[0][0] == 1.0  # full


def test_rates_over_a_threshold_are_never_all_clear_whatever_the_sample() -> None:
    outage = PipelineHealth(600, 3, 0, 3, 3, 5.0, 9.0, 0, 1)  # three replies, all fallbacks
    [alert] = data.alerts(status(health=outage))
    assert (alert.level, alert.title) == ("warning", "Fallback rate 100% over 3 replies")
    assert "too few replies for the guard to act (it needs 20)" in alert.detail
    assert "OPENAI_API_KEY" in alert.detail
    guard_off = replace(RolloutState(percentage=50).guard, enabled=False)
    failing = PipelineHealth(600, 200, 30, 170, 0, 5.0, 9.0, 0, 1)
    found = data.alerts(
        status(health=failing, rollout=RolloutState(percentage=50, guard=guard_off))
    )
    assert titles(found) == [("warning", "Failure rate 15% over 200 replies")]
    assert "the guard is off" in found[0].detail
    # From min_sample on, with the guard on, the guard's own verdict speaks instead.
    assert data.alerts(status(health=replace(outage, finished=20, sent=20, fallbacks=20))) == []


def test_a_rollout_no_one_changed_says_so_instead_of_decades_ago() -> None:
    utc = dt.UTC
    never = widgets.last_change(RolloutState(), NOW, utc)
    assert "Never changed here" in never and "ago" not in never
    changed = RolloutState(updated_at=NOW - 120, updated_by="console:Wei Ling")
    assert widgets.last_change(changed, NOW, utc).startswith(
        "Last changed by console:Wei Ling 2 min"
    )
