"""Brokers: each persona's workload against capacity, now and over time."""

from __future__ import annotations

import streamlit as st

from console import auth, charts, data, widgets

LEVELS = {"full": "at capacity", "busy": "busy", "ok": "has room"}

auth.current_operator()  # nothing renders for a session that has not logged in
st.title("Brokers")
choice = st.segmented_control(
    "Window",
    [w.label for w in data.WINDOWS],
    default=data.DEFAULT_WINDOW.label,
    key="brokers_window",
)
window = data.window_by_label(choice or data.DEFAULT_WINDOW.label)
key = data.key()
tz = widgets.timezone()
rows = data.broker_rows(key, window.span_s)
names = {row.id: row.name for row in rows}

if not rows:
    widgets.empty_state("No brokers yet: run `ai-broker brokers seed` (web and worker do it too).")
    st.stop()

for row in rows:
    if row.at_capacity:
        st.warning(
            f"**{row.name} is at capacity** ({row.workload} / {row.capacity} chats in progress): "
            "new conversations go to the other brokers until a slot frees up.",
            icon=":material/block:",
        )

with st.grid("auto", min_column_width=230, gap="small", border=True):
    for row in rows:
        with st.container(gap="xsmall"):
            st.markdown(f"**{row.name}** {widgets.load_badge(row.load)}")
            st.caption(f"{row.title} · {row.persona_type}")
            st.html(widgets.load_bar_html(row.workload, row.capacity))
            st.markdown(
                f"**{widgets.count(row.replies)}** replies · "
                f"**{widgets.count(row.window_handoffs)}** handoffs · "
                f"**{widgets.count(row.failures)}** failed"
            )
            st.caption(
                f"in {window.label} · all time: {widgets.count(row.conversations)} "
                f"conversations, {widgets.count(row.messages_handled)} messages, "
                f"{widgets.count(row.handoffs)} handoffs"
            )

st.subheader("All brokers")
st.dataframe(
    widgets.coloured(
        [
            {
                "broker": row.name,
                "status": LEVELS[widgets.load_level(row.load)],
                "load": row.load,
                "in progress": f"{row.workload} / {row.capacity}",
                "bot conversations": row.active_conversations,
                "handed off": row.handed_off,
                "with a human": row.with_human,
                f"replies ({window.label})": row.replies,
                f"failed ({window.label})": row.failures,
                f"fallbacks ({window.label})": row.fallbacks,
                "conversations (all time)": row.conversations,
                "messages handled (all time)": row.messages_handled,
                "handoffs (all time)": row.handoffs,
                "handoff rate": row.handoff_rate,
                "active": row.is_active,
            }
            for row in rows
        ],
        "status",
        {LEVELS[level]: colour for level, colour in widgets.LOAD_COLOURS.items()},
    ),
    hide_index=True,
    key="brokers_table",
    column_config={
        "load": st.column_config.ProgressColumn(
            "load", format="percent", min_value=0, max_value=1, width="small"
        ),
        "handoff rate": st.column_config.NumberColumn("handoff rate", format="percent"),
        "active": st.column_config.CheckboxColumn("active"),
    },
)

left, right = st.columns(2)
with left:
    st.markdown(
        f"**Workload against capacity** · {window.label} ({widgets.tz_label(tz)}) · "
        "red is full, orange 80 %+"
    )
    samples = data.workload_history(key, window.span_s)
    if samples:
        st.plotly_chart(charts.workload(samples, names, tz), key="chart_workload")
    else:
        widgets.empty_state(
            "No workload samples yet: the worker records each broker's workload every minute."
        )
with right:
    st.markdown(f"**Replies sent per broker** · {window.label}")
    replies = data.broker_replies(key, window)
    if replies:
        st.plotly_chart(charts.broker_replies(replies, names, tz), key="chart_broker_replies")
    else:
        widgets.empty_state(f"No replies sent in the last {window.label}.")
