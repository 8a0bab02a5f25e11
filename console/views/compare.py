"""Compare: n8n's and the new pipeline's replies to the same customer message, and verdicts."""

from __future__ import annotations

import datetime as dt
import math
import time

import streamlit as st

from app.store.analytics import ComparisonFilter
from app.store.models import Comparison, Verdict
from console import auth, charts, data, widgets

PAGE_SIZE = 5
LOW_SIMILARITY = 0.5
VERDICT_BUTTONS = (
    (Verdict.BETTER, "New better", ":material/thumb_up:"),
    (Verdict.SAME, "Same", ":material/drag_handle:"),
    (Verdict.WORSE, "New worse", ":material/thumb_down:"),
)
VERDICT_BADGES = {
    Verdict.BETTER: ":green-badge[new better]",
    Verdict.SAME: ":gray-badge[same]",
    Verdict.WORSE: ":red-badge[new worse]",
}


def latency_ms(value: float | None) -> str:
    return widgets.seconds(None if value is None else value / 1000)


def rate(actor: str, comparison: Comparison, verdict: Verdict) -> None:
    """Store a verdict with the note typed next to it (a button callback)."""
    note = str(st.session_state.get(f"note_{comparison.id}", ""))
    stored = data.set_verdict(actor, comparison.id, verdict, note)
    widgets.flash(
        f"Comparison #{comparison.id} rated “{verdict.value}”."
        if stored
        else f"Comparison #{comparison.id} no longer exists.",
        ok=stored,
    )


def show(comparison: Comparison) -> None:
    with st.container(border=True):
        broker = names.get(comparison.broker_id or "", comparison.broker_id or "no broker yet")
        verdict = VERDICT_BADGES[comparison.verdict] if comparison.verdict else ""
        st.markdown(
            f"**#{comparison.id}** · conversation {comparison.conversation_id} · {broker} · "
            f"{widgets.clock(comparison.received_at, tz)} "
            f"{widgets.similarity_badge(comparison.similarity)} {verdict}"
        )
        st.markdown(f"**Customer:** {widgets.plain(comparison.customer_message)}")
        left, right = st.columns(2)
        with left, st.container(border=True):
            st.markdown(f"**n8n** · {latency_ms(comparison.n8n_latency_ms)}")
            st.markdown(
                widgets.plain(comparison.n8n_reply)
                if comparison.n8n_reply
                else "_waiting for n8n's reply_"
            )
        with right, st.container(border=True):
            fallback = " · :orange-badge[fallback]" if comparison.shadow_used_fallback else ""
            st.markdown(f"**New pipeline** · {latency_ms(comparison.shadow_latency_ms)}{fallback}")
            st.markdown(
                widgets.plain(comparison.shadow_reply)
                if comparison.shadow_reply
                else "_the shadow reply is still being written_"
            )
        if comparison.n8n_reply and comparison.shadow_reply:
            with st.expander("Difference (n8n → new)", expanded=comparison.id == first_id):
                st.html(widgets.word_diff_html(comparison.n8n_reply, comparison.shadow_reply))
        if comparison.verdict:
            note = (
                f": “{widgets.plain(comparison.verdict_note)}”" if comparison.verdict_note else ""
            )
            st.caption(
                f"Rated {comparison.verdict.value} by {comparison.verdict_by} "
                f"{widgets.ago(comparison.verdict_at, time.time())}{note}"
            )
        with st.container(horizontal=True, vertical_alignment="bottom"):
            st.text_input(
                "Note",
                key=f"note_{comparison.id}",
                placeholder="Optional note with your verdict",
                label_visibility="collapsed",
                width=360,
                disabled=not operator.can_act,
            )
            for verdict_value, label, icon in VERDICT_BUTTONS:
                st.button(
                    label,
                    icon=icon,
                    key=f"verdict_{verdict_value.value}_{comparison.id}",
                    on_click=rate,
                    args=(operator.actor, comparison, verdict_value),
                    type="primary" if comparison.verdict is verdict_value else "secondary",
                    disabled=not operator.can_act,
                )


operator = auth.current_operator()
st.title("Compare")
st.caption(
    "Shadow mode: for messages n8n answers, the new pipeline writes a reply too and sends "
    "nothing. Rate the pairs to decide when to move traffic."
)
key = data.key()
tz = widgets.timezone()
bounds = data.comparison_bounds(key)
if bounds is None:
    widgets.empty_state(
        "No comparisons yet — turn shadow on in Rollout.", link=("views/rollout.py", "Rollout")
    )
    st.stop()
assert bounds is not None

first_day = dt.datetime.fromtimestamp(bounds[0], tz).date()
last_day = dt.datetime.fromtimestamp(bounds[1], tz).date()
names = data.broker_names()

with st.container(horizontal=True, vertical_alignment="bottom"):
    days = st.date_input(
        "Received",
        value=(first_day, last_day),
        min_value=first_day,
        max_value=last_day,
        key="compare_days",
        width=260,
    )
    broker_id = st.selectbox(
        "Broker",
        [None, *names],
        format_func=lambda b: "All brokers" if b is None else names[b],
        key="compare_broker",
        width=220,
    )
    low = st.toggle(f"Similarity below {LOW_SIMILARITY}", key="compare_low")
    unrated = st.toggle("Unrated only", key="compare_unrated")

picked = [d for d in (days if isinstance(days, tuple) else (days,)) if d is not None]
start_day, end_day = (picked[0], picked[-1]) if picked else (first_day, last_day)
query = ComparisonFilter(
    since=dt.datetime.combine(start_day, dt.time(), tz).timestamp(),
    until=dt.datetime.combine(end_day + dt.timedelta(days=1), dt.time(), tz).timestamp(),
    broker_id=broker_id,
    max_similarity=LOW_SIMILARITY - 1e-9 if low else None,
    unrated=unrated,
)
summary = data.comparison_summary(key, query)

with st.grid(6, gap="small", min_column_width=150):
    st.metric("Comparisons", widgets.count(summary.total), border=True)
    st.metric("Both replies in", widgets.count(summary.complete), border=True)
    st.metric(
        "Avg similarity",
        "—" if summary.avg_similarity is None else f"{summary.avg_similarity:.2f}",
        border=True,
    )
    st.metric(f"Below {LOW_SIMILARITY}", widgets.count(summary.below_half), border=True)
    st.metric(
        "Rated",
        widgets.count(summary.rated),
        delta=widgets.percent(summary.rated / summary.total if summary.total else None, 0),
        delta_color="off",
        delta_arrow="off",
        border=True,
    )
    st.metric(
        "Latency new / n8n",
        "—"
        if summary.avg_new_latency_ms is None or summary.avg_n8n_latency_ms is None
        else f"{summary.avg_new_latency_ms / 1000:.1f} / {summary.avg_n8n_latency_ms / 1000:.1f} s",
        border=True,
        help="Average time each system took to write its reply, in seconds.",
    )

left, right = st.columns([3, 2])
with left:
    st.markdown("**Similarity** · 0 = nothing in common, 1 = the same words")
    st.plotly_chart(charts.similarity_histogram(summary), key="chart_similarity")
with right:
    st.markdown(
        f"**Verdicts** · {widgets.count(summary.better)} better, {widgets.count(summary.same)} "
        f"same, {widgets.count(summary.worse)} worse"
    )
    if summary.rated:
        st.plotly_chart(charts.verdicts(summary), key="chart_verdicts")
        worse = summary.worse / summary.rated
        st.caption(f"The new pipeline is rated worse in {widgets.percent(worse)} of rated pairs.")
    else:
        st.caption("No verdicts yet: rate pairs below.")
    st.download_button(
        "Export CSV",
        data=data.comparisons_csv(key, query),
        file_name=f"comparisons-{start_day}-{end_day}.csv",
        mime="text/csv",
        icon=":material/download:",
        key="compare_export",
        help="The filtered comparisons (up to 50,000), with both replies and verdicts.",
    )

pages = max(1, math.ceil(summary.total / PAGE_SIZE))
if st.session_state.get("compare_page", 1) > pages:  # the filters left fewer pages
    st.session_state["compare_page"] = pages
result = data.comparison_page(key, query, st.session_state.get("compare_page", 1), PAGE_SIZE)
if not result.rows:
    widgets.empty_state("No comparisons match these filters.")
first_id = result.rows[0].id if result.rows else None
for item in result.rows:
    show(item)
if pages > 1:
    st.pagination(pages, key="compare_page", width="stretch")
