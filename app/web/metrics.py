"""Prometheus text exposition of what the store knows (shared by every process)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

from app.domain.circuit import Circuit, CircuitPosition
from app.domain.rollout import RolloutState
from app.services.forwarding import N8N_WATCHDOG_COUNTER
from app.services.guard import HEARTBEAT_STALE_S
from app.services.intake import WEBHOOK_COUNTER
from app.store.base import Store

LATENCY_BUCKETS_S = (1, 2, 3, 4, 5, 6, 8, 10, 15, 30, 60)
LATENCY_WINDOW_S = 3600
HEALTH_WINDOW_S = 600
CIRCUIT_GAUGE = {CircuitPosition.CLOSED: 0, CircuitPosition.OPEN: 1, CircuitPosition.HALF_OPEN: 0.5}


def render_metrics(
    store: Store,
    queue_depth: Mapping[str, int],
    *,
    rollout: RolloutState | None = None,
    circuit: Circuit | None = None,
    now: float | None = None,
) -> str:
    now = time.time() if now is None else now
    lines: list[str] = []
    if rollout is not None:
        _family(
            lines,
            "ai_broker_rollout_percentage",
            "gauge",
            "Share of conversations routed to the new pipeline",
            [("", rollout.percentage)],
        )
        _family(
            lines,
            "ai_broker_rollout_shadow",
            "gauge",
            "1 when shadow comparison is on",
            [("", int(rollout.shadow))],
        )
    if circuit is not None:
        _family(
            lines,
            "ai_broker_n8n_circuit_open",
            "gauge",
            "n8n circuit breaker: 0 closed, 1 open, 0.5 half-open",
            [("", CIRCUIT_GAUGE[circuit.position])],
        )
    _family(
        lines,
        "ai_broker_n8n_silent_total",
        "counter",
        "Messages n8n took without replying in N8N_REPLY_TIMEOUT_S, answered by the new pipeline",
        [("", store.counters(N8N_WATCHDOG_COUNTER).get("silent", 0))],
    )
    _family(
        lines,
        "ai_broker_webhooks_total",
        "counter",
        "Chatwoot webhooks by outcome (status:reason)",
        (
            (f'outcome="{_escape(label)}"', value)
            for label, value in store.counters(WEBHOOK_COUNTER).items()
        ),
    )
    _family(
        lines,
        "ai_broker_jobs",
        "gauge",
        "Reply jobs in the ledger by state",
        ((f'state="{state}"', n) for state, n in sorted(store.job_state_counts().items())),
    )
    _family(
        lines,
        "ai_broker_queue_depth",
        "gauge",
        "Tasks in the queue (pending, scheduled)",
        ((f'kind="{kind}"', n) for kind, n in queue_depth.items()),
    )
    brokers = store.list_brokers()
    _family(
        lines,
        "ai_broker_broker_workload",
        "gauge",
        "Conversations a broker is replying to now",
        ((f'broker="{b.id}"', b.current_workload) for b in brokers),
    )
    _family(
        lines,
        "ai_broker_broker_capacity",
        "gauge",
        "Most conversations a broker replies to at once",
        ((f'broker="{b.id}"', b.max_concurrent_chats) for b in brokers),
    )
    alive = store.live_workers(since=now - HEARTBEAT_STALE_S)
    _family(
        lines,
        "ai_broker_workers_alive",
        "gauge",
        "Worker processes with a heartbeat in the last 30 s",
        [("", len(alive))],
    )
    window = store.reply_window_stats(since=now - HEALTH_WINDOW_S, now=now)
    _family(
        lines,
        "ai_broker_jobs_overdue",
        "gauge",
        "Jobs queued or waiting more than 30 s past their due time",
        [("", window.backlog)],
    )
    _family(
        lines,
        "ai_broker_replies_window",
        "gauge",
        "New-pipeline replies finished in the last 10 minutes, by outcome",
        [
            ('outcome="finished"', window.finished),
            ('outcome="failed"', window.failed),
            ('outcome="sent"', window.sent),
            ('outcome="fallback"', window.fallbacks),
        ],
    )
    if rollout is not None:
        _family(
            lines,
            "ai_broker_queue_paused",
            "gauge",
            "1 while the new pipeline is paused",
            [("", int(rollout.queue_paused))],
        )
    histogram = store.reply_latency_histogram(
        since=now - LATENCY_WINDOW_S, bounds_s=LATENCY_BUCKETS_S
    )
    lines.append("# HELP ai_broker_reply_latency_seconds Customer message to reply sent, last hour")
    lines.append("# TYPE ai_broker_reply_latency_seconds histogram")
    for bound, count in zip(histogram.bounds_s, histogram.cumulative, strict=True):
        lines.append(f'ai_broker_reply_latency_seconds_bucket{{le="{bound}"}} {count}')
    lines.append(f'ai_broker_reply_latency_seconds_bucket{{le="+Inf"}} {histogram.count}')
    lines.append(f"ai_broker_reply_latency_seconds_sum {histogram.sum_s:.3f}")
    lines.append(f"ai_broker_reply_latency_seconds_count {histogram.count}")
    return "\n".join(lines) + "\n"


def _family(
    lines: list[str],
    name: str,
    kind: str,
    help_text: str,
    samples: Iterable[tuple[str, float]],
) -> None:
    lines.append(f"# HELP {name} {help_text}")
    lines.append(f"# TYPE {name} {kind}")
    for labels, value in samples:
        lines.append(f"{name}{{{labels}}} {value}" if labels else f"{name} {value}")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
