"""Overview: is the system healthy right now? The live part refreshes itself every 10 s."""

from __future__ import annotations

import time

import streamlit as st

from console import auth, charts, data, widgets

auth.current_operator()  # nothing renders for a session that has not logged in
st.title("Overview")
choice = st.segmented_control(
    "Chart window",
    [w.label for w in data.WINDOWS],
    default=data.DEFAULT_WINDOW.label,
    key="overview_window",
)
window = data.window_by_label(choice or data.DEFAULT_WINDOW.label)


@st.fragment(run_every=data.REFRESH_S)
def live() -> None:
    now = time.time()
    tz = widgets.timezone()
    key = data.key()
    current = data.status()
    widgets.show_alerts(data.alerts(current, data.broker_rows(key, 3600)))

    st.subheader("Queue now")
    with st.grid(5, gap="small", min_column_width=150):
        st.metric(
            "Ready to run",
            widgets.count(current.depth.pending),
            border=True,
            height="stretch",
            help="Huey tasks waiting for a free worker greenlet, and (with Redis) messages a "
            "receiver accepted that no worker has recorded yet.",
        )
        st.metric(
            "Scheduled",
            widgets.count(current.depth.scheduled),
            border=True,
            height="stretch",
            help="Huey tasks due later: replies in their human-like delay, retries.",
        )
        st.metric(
            "Running",
            widgets.count(current.states.get("running", 0)),
            border=True,
            height="stretch",
            help="Jobs a worker holds under a lease right now.",
        )
        st.metric(
            "Overdue",
            widgets.count(current.overdue),
            border=True,
            height="stretch",
            help="Queued or waiting jobs more than 30 s past their reply time.",
        )
        alive = len(current.alive_workers)
        st.metric(
            "Workers alive",
            alive,
            border=True,
            height="stretch",
            help="Workers whose heartbeat is under 30 s old.",
        )
    if current.depth.error:
        st.caption(f"Queue depth unavailable: {current.depth.error}")

    stats, before = data.window_stats(key, 3600)
    outcomes = data.outcomes(key, window)
    latencies = data.latencies(key, window)
    st.subheader("New pipeline, last hour")
    with st.grid(6, gap="small", min_column_width=150):
        st.metric(
            "Replies",
            widgets.count(stats.sent + stats.handed_off),
            delta=f"{(stats.sent + stats.handed_off) - (before.sent + before.handed_off):+,}",
            delta_color="off",
            border=True,
            height="stretch",
            chart_data=[b.sent + b.handed_off for b in outcomes],
            help="Replies sent or handed off in the last hour (sparkline: the chart window).",
        )
        st.metric(
            "Failure rate",
            widgets.percent(stats.failure_rate),
            delta=_pp(stats.failure_rate, before.failure_rate),
            delta_color="inverse",
            border=True,
            height="stretch",
            chart_data=[b.failure_rate or 0.0 for b in outcomes],
            help=f"{stats.failed:,} of {stats.finished:,} replies failed.",
        )
        st.metric(
            "Latency p50",
            widgets.seconds(stats.p50_s),
            border=True,
            height="stretch",
            chart_data=[b.p50_s for b in latencies],
            help="Customer message to reply, including the human-like delay.",
        )
        st.metric(
            "Latency p95",
            widgets.seconds(stats.p95_s),
            delta=_seconds_delta(stats.p95_s, before.p95_s),
            delta_color="inverse",
            border=True,
            height="stretch",
            chart_data=[b.p95_s for b in latencies],
        )
        st.metric(
            "Fallback rate",
            widgets.percent(stats.fallback_rate),
            border=True,
            height="stretch",
            help="Sent replies that used the persona's holding text (LLM failed).",
        )
        st.metric(
            "Handoff rate",
            widgets.percent(stats.handoff_rate),
            border=True,
            height="stretch",
            help="Replies that handed the conversation to a human.",
        )

    left, right = st.columns(2)
    with left:
        st.markdown(
            f"**Throughput and failures** · {window.label}, by finish time ({widgets.tz_label(tz)})"
        )
        st.plotly_chart(charts.throughput(outcomes, tz), key="chart_throughput")
    with right:
        st.markdown(f"**Reply latency** · {window.label}")
        st.plotly_chart(
            charts.latency(latencies, tz, guard_p95_s=current.rollout.guard.max_p95_latency_s),
            key="chart_latency",
        )

    left, right = st.columns([2, 3])
    with left:
        st.markdown("**Ledger by state** · all time")
        if current.states:
            st.plotly_chart(charts.state_counts(current.states), key="chart_states")
        else:
            widgets.empty_state("No jobs yet: they appear when the first customer writes.")
    with right:
        st.markdown("**Workers**")
        if current.workers:
            st.dataframe(
                widgets.coloured(
                    [
                        {
                            "status": "alive" if w in current.alive_workers else "stopped",
                            "worker": w.worker_id,
                            "host": w.hostname,
                            "pid": w.pid,
                            "greenlets": w.concurrency,
                            "up since": widgets.clock(w.started_at, tz),
                            "last heartbeat": widgets.ago(w.seen_at, now),
                        }
                        for w in current.workers
                    ],
                    "status",
                    {"alive": "#2e7d32", "stopped": "#c62828"},
                ),
                hide_index=True,
                key="workers_table",
            )
        else:
            widgets.empty_state("No worker has ever started: run `ai-broker worker`.")
    st.caption(
        f"Updated {widgets.clock(now, tz, date=False)} {widgets.tz_label(tz)} · "
        f"refreshes every {data.REFRESH_S} s"
    )


def _pp(now: float | None, before: float | None) -> str | None:
    if now is None or before is None or abs(now - before) < 0.0005:
        return None
    return f"{(now - before) * 100:+.1f} pp"


def _seconds_delta(now: float | None, before: float | None) -> str | None:
    if now is None or before is None or abs(now - before) < 0.05:
        return None
    return f"{now - before:+.1f} s"


live()
