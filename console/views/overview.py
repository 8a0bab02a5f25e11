"""Overview: is the system healthy right now? The live part refreshes itself every 10 s.

With Redis, customer messages a worker parked in the intake buffer are listed under the alerts,
with the action that puts them back.
"""

from __future__ import annotations

import datetime as dt
import time

import streamlit as st

from console import auth, charts, data, widgets

REPLAY = "replay_parked"
PARKED_COLOURS = {"parked": "#ef6c00", "unreadable": "#c62828"}


def act(confirmation: widgets.Confirmation, reason: str) -> widgets.Outcome:
    result = data.replay_parked(operator.actor, reason)
    return widgets.Outcome(result.ok, result.message)


def ask_replay(count: int) -> None:
    widgets.ask(
        widgets.Confirmation(
            action=REPLAY,
            title="Put parked messages back?",
            body=(
                f"- **{count:,} parked message{'s' if count != 1 else ''}** go back into the "
                "intake buffer, and workers record them within seconds.\n"
                "- Do it once the cause in the worker log is fixed and the fixed workers run: "
                "until then they park the same messages again.\n"
                "- A message that was in fact recorded makes no second job (recording is "
                "idempotent)."
            ),
            confirm_label="Put them back",
        )
    )


def intake_buffer(parked: data.ParkedIntake | None, now: float, tz: dt.tzinfo) -> None:
    """Parked messages and the action; nothing without an intake buffer, nor with none parked
    (a Redis failure is an alert)."""
    if parked is None:
        return
    if parked.count:
        show_parked(parked, now, tz)
    # Only this page's dialog: another page's pending confirmation is not for this `act`.
    asked = widgets.pending()
    if asked is not None and asked.action == REPLAY:
        widgets.confirm_pending(act)


def show_parked(parked: data.ParkedIntake, now: float, tz: dt.tzinfo) -> None:
    """The oldest parked messages, by what identifies them (never their content)."""
    count = parked.count or 0
    st.subheader("Parked intake messages")
    if parked.oldest:  # empty when put back between the count and the listing
        st.dataframe(
            widgets.coloured(
                [
                    {
                        "state": "unreadable" if m.problem else "parked",
                        "received": widgets.clock(m.received_at, tz),
                        "waiting": widgets.ago(m.received_at, now),
                        "conversation": _id(m.conversation_id),
                        "message id": _id(m.message_id),
                        "size": widgets.size(m.size),
                        "problem": m.problem or "",
                    }
                    for m in parked.oldest
                ],
                "state",
                PARKED_COLOURS,
            ),
            hide_index=True,
            key="parked_table",
        )
    shown = len(parked.oldest)
    if count > shown:
        st.caption(f"The oldest {shown:,} of {count:,}.")
    st.button(
        "Put parked messages back",
        type="primary",
        icon=":material/replay:",
        key="parked_replay",
        on_click=ask_replay,
        args=(count,),
        disabled=not operator.can_act,
        help="Back into the intake buffer for the workers to record (`ai-broker intake replay`).",
    )


def _id(value: int | None) -> str:
    # Text, not numbers: an unreadable entry has no id, and a column of numbers with gaps
    # would be drawn as floats.
    return "—" if value is None else str(value)


operator = auth.current_operator()  # nothing renders for a session that has not logged in
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
    intake_buffer(current.parked, now, tz)

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
