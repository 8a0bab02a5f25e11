"""Rollout: who answers customers (n8n or the new pipeline), changing it, and rolling back."""

from __future__ import annotations

import time
from dataclasses import replace

import streamlit as st

from app.domain.rollout import (
    GUARD_RANGES,
    GuardThresholds,
    RolloutChange,
    RolloutError,
    RolloutState,
    apply_change,
    describe,
)
from console import auth, charts, data, widgets

DRAFT_KEYS = ("rollout_pct", "rollout_shadow", "rollout_n8n")


def reset_drafts() -> None:
    """The controls show the live state again (after a change, a cancel or a refusal)."""
    for name in DRAFT_KEYS:
        st.session_state.pop(name, None)


def propose() -> None:
    """A control moved: ask for confirmation of the change it makes (a widget callback)."""
    current = data.status()
    live = current.rollout
    change = RolloutChange(
        percentage=st.session_state.get("rollout_pct", live.percentage),
        shadow=st.session_state.get("rollout_shadow", live.shadow),
        n8n_enabled=st.session_state.get("rollout_n8n", live.n8n_enabled),
    )
    try:
        after = apply_change(live, change)
    except RolloutError as exc:
        widgets.flash(f"Not applied: {exc}", ok=False)
        reset_drafts()
        return
    if after == live:
        return
    widgets.ask(
        widgets.Confirmation(
            action="change",
            title="Change the rollout?",
            body=(
                f"{summary(live, after)}\n\n"
                f"**After the change:** {describe(after, n8n_configured=current.n8n_configured)}"
            ),
            confirm_label="Apply change",
            danger=after.percentage > live.percentage,
            payload={"change": change},
        )
    )


def summary(before: RolloutState, after: RolloutState) -> str:
    lines = []
    if before.percentage != after.percentage:
        lines.append(f"- New pipeline share: **{before.percentage} % → {after.percentage} %**")
    if before.shadow != after.shadow:
        lines.append(f"- Shadow comparison: **{'on' if after.shadow else 'off'}**")
    if before.n8n_enabled != after.n8n_enabled:
        lines.append(f"- n8n workflow: **{'enabled' if after.n8n_enabled else 'disabled'}**")
    if before.guard != after.guard:
        lines.append("- Rollback guard thresholds change (see below)")
    return "\n".join(lines)


def act(confirmation: widgets.Confirmation, reason: str) -> widgets.Outcome:
    try:
        if confirmation.action == "rollback":
            result = data.rollback(operator.actor, reason)
            return widgets.Outcome(
                True,
                f"Rolled back to n8n: {result.cancelled} unsent replies cancelled, "
                f"{result.forwarded} handed to n8n, {result.kept} kept by the new pipeline.",
            )
        state = data.change_rollout(operator.actor, confirmation.payload["change"], reason)
    except RolloutError as exc:
        return widgets.Outcome(False, str(exc))
    return widgets.Outcome(
        True, f"Rollout changed: {describe(state, n8n_configured=n8n_configured)}"
    )


def ask_rollback() -> None:
    unsent = data.unsent_replies()
    widgets.ask(
        widgets.Confirmation(
            action="rollback",
            title="Roll back to n8n?",
            body=(
                "- The new pipeline's share goes to **0 %** at once; n8n answers every "
                "conversation.\n"
                f"- **{unsent:,} unsent replies** of the new pipeline are cancelled and their "
                "messages handed to n8n (any n8n cannot take stay with the new pipeline), so "
                "every customer message is still answered once.\n"
                "- Replies already being sent are not affected."
            ),
            confirm_label="Roll back now",
            danger=True,
        )
    )


def ask_guard(guard: GuardThresholds) -> None:
    widgets.ask(
        widgets.Confirmation(
            action="change",
            title="Change the rollback guard?",
            body=(
                f"- Guard **{'on' if guard.enabled else 'off'}**; roll back when, over "
                f"{guard.window_s / 60:g} min and at least {guard.min_sample} replies:\n"
                f"- failure rate > **{guard.max_failure_rate:.1%}**, fallback rate > "
                f"**{guard.max_fallback_rate:.1%}**, or p95 latency > "
                f"**{guard.max_p95_latency_s:g} s**"
            ),
            confirm_label="Apply thresholds",
            danger=not guard.enabled,
            payload={"change": RolloutChange(guard=guard)},
        )
    )


operator = auth.current_operator()
st.title("Rollout")
current = data.status()
state = current.rollout
n8n_configured = current.n8n_configured
tz = widgets.timezone()
now = time.time()

with st.grid(5, gap="small", min_column_width=150):
    st.metric(
        "New pipeline",
        f"{state.percentage} %",
        border=True,
        help="Share of conversations (sticky per conversation) the new pipeline answers.",
    )
    st.metric("Shadow comparison", "on" if state.shadow else "off", border=True)
    st.metric(
        "n8n workflow",
        ("enabled" if state.n8n_enabled else "disabled") if n8n_configured else "not configured",
        border=True,
    )
    st.metric("Reply queue", "paused" if state.queue_paused else "running", border=True)
    circuit = current.circuit
    st.metric(
        "n8n circuit",
        "—" if circuit is None else circuit.position.value.replace("_", "-"),
        border=True,
        help="Open: forwards to n8n keep failing, so the new pipeline answers instead.",
    )
st.info(current.description, icon=":material/info:")
st.caption(widgets.last_change(state, now, tz))
if current.recommendations:
    st.markdown("**Next steps**\n" + "\n".join(f"- {r}" for r in current.recommendations))

st.subheader("Change")
locked = not operator.can_act
left, right = st.columns([3, 2], gap="large")
with left:
    st.slider(
        "Share of conversations answered by the new pipeline",
        0,
        100,
        value=state.percentage,
        step=5,
        format="%d %%",
        key="rollout_pct",
        on_change=propose,
        disabled=locked or not n8n_configured,
        help="Each conversation keeps its system; raising the share never moves one back.",
    )
    st.toggle(
        "Shadow comparison (the new pipeline also writes replies for n8n's messages)",
        value=state.shadow,
        key="rollout_shadow",
        on_change=propose,
        disabled=locked or not n8n_configured,
    )
    st.toggle(
        "n8n workflow enabled (can be disabled only at 100 %)",
        value=state.n8n_enabled,
        key="rollout_n8n",
        on_change=propose,
        disabled=locked or not n8n_configured,
    )
    if not n8n_configured:
        st.caption("No n8n workflow is configured (N8N_AI_BROKER_WEBHOOK_URL): nothing to migrate.")
with right:
    st.markdown("**Emergency**")
    st.button(
        "Roll back to n8n",
        type="primary",
        icon=":material/undo:",
        on_click=ask_rollback,
        key="rollback",
        disabled=locked or not n8n_configured,
        help="Percentage to 0 in one step; unsent replies of the new pipeline go to n8n.",
        width="stretch",
    )
    st.caption(
        f"{widgets.count(data.unsent_replies())} unsent replies of the new pipeline right now."
    )

widgets.confirm_pending(act, on_close=reset_drafts)

st.subheader("Rollback guard")
guard = state.guard
st.markdown(
    f"{':green-badge[on]' if guard.enabled else ':red-badge[off]'} Over the last "
    f"**{guard.window_s / 60:g} min** and at least **{guard.min_sample}** replies, the worker "
    f"rolls back by itself when the failure rate exceeds **{guard.max_failure_rate:.1%}**, the "
    f"fallback rate **{guard.max_fallback_rate:.1%}**, or the p95 latency "
    f"**{guard.max_p95_latency_s:g} s**."
)
health = current.health
st.caption(
    f"Now: failure rate {widgets.percent(health.failure_rate)}, fallback rate "
    f"{widgets.percent(health.fallback_rate)}, p95 {widgets.seconds(health.p95_latency_s)} over "
    f"{health.finished:,} replies."
)
with (
    st.expander("Edit the guard thresholds", icon=":material/tune:"),
    st.form("guard_form", border=False),
):
    enabled = st.toggle("Guard enabled", value=guard.enabled)
    cols = st.columns(5)
    limits = GUARD_RANGES  # the API's ranges
    failure = cols[0].number_input(
        "Max failure rate",
        *limits["max_failure_rate"],
        guard.max_failure_rate,
        step=0.01,
        format="%.3f",
    )
    fallback = cols[1].number_input(
        "Max fallback rate",
        *limits["max_fallback_rate"],
        guard.max_fallback_rate,
        step=0.01,
        format="%.3f",
    )
    p95 = cols[2].number_input(
        "Max p95 latency (s)", *limits["max_p95_latency_s"], guard.max_p95_latency_s, step=1.0
    )
    window_min = cols[3].number_input(
        "Window (min)",
        limits["window_s"][0] / 60,
        limits["window_s"][1] / 60,
        guard.window_s / 60,
        step=1.0,
    )
    low, high = limits["min_sample"]
    sample = cols[4].number_input("Min replies", int(low), int(high), guard.min_sample, step=1)
    if st.form_submit_button("Review change…", disabled=locked):
        proposed = replace(
            guard,
            enabled=enabled,
            max_failure_rate=float(failure),
            max_fallback_rate=float(fallback),
            max_p95_latency_s=float(p95),
            window_s=float(window_min) * 60,
            min_sample=int(sample),
        )
        if proposed != guard:
            ask_guard(proposed)
            st.rerun()

st.subheader("Who answered customers")
window = data.window_by_label(
    st.segmented_control(
        "Window",
        [w.label for w in data.WINDOWS],
        default=data.DEFAULT_WINDOW.label,
        key="rollout_window",
    )
    or data.DEFAULT_WINDOW.label
)
buckets, steps = data.traffic(data.key(), window)
if any(b.new or b.n8n for b in buckets):
    st.plotly_chart(charts.traffic_share(buckets, steps, tz, end=now), key="chart_traffic")
else:
    widgets.empty_state(f"No customer messages in the last {window.label}.")
if n8n_configured:
    share, new_pipeline = data.n8n_share(data.key(), window.span_s)
    with st.grid(5, gap="small", min_column_width=150):
        st.metric(
            "n8n took",
            f"{share.taken:,}",
            border=True,
            help="Customer messages forwarded to n8n that it accepted, in this window.",
        )
        st.metric("n8n answered", f"{share.answered:,}", border=True)
        st.metric(
            "n8n silent",
            f"{share.silent:,}",
            border=True,
            delta=f"{share.silent_rate:.1%} of taken"
            if share.silent and share.silent_rate
            else None,
            delta_color="inverse",
            help="Taken but never answered within N8N_REPLY_TIMEOUT_S: the new pipeline "
            "answered them (Jobs page, route reason n8n_silent).",
        )
        st.metric(
            "n8n could not take",
            f"{share.failed:,}",
            border=True,
            help="Down, starting up, not registered or circuit open: the new pipeline answered.",
        )
        st.metric(
            "Median reply",
            widgets.seconds(share.p50_s),
            border=True,
            help="Customer message to reply: n8n here; the new pipeline's in the caption.",
        )
    st.caption(
        f"Median reply in the last {window.label}: n8n {widgets.seconds(share.p50_s)}, "
        f"new pipeline {widgets.seconds(new_pipeline.p50_s)}."
    )

st.subheader("Audit log")
entries = data.audit_log()
if entries:
    st.dataframe(
        widgets.coloured(
            [
                {
                    "when": widgets.clock(entry.at, tz),
                    "who": entry.actor,
                    "action": entry.action.replace("_", " "),
                    "change": data.audit_change(entry),
                    "reason": entry.reason,
                    "automatic": "yes" if entry.automatic else "",
                    "detail": ", ".join(f"{k} {v}" for k, v in (entry.detail or {}).items()),
                }
                for entry in entries
            ],
            "action",
            {"auto rollback": "#c62828", "rollback": "#c62828", "pause": "#ef6c00"},
        ),
        hide_index=True,
        key="audit_table",
    )
else:
    widgets.empty_state("No rollout changes yet.")
