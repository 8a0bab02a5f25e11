"""Jobs: the reply-job ledger: search it, open a job, retry or cancel it, pause the queue."""

from __future__ import annotations

import json
import math
import time

import streamlit as st

from app.store.analytics import JobDetail
from console import auth, data, widgets

PAGE_SIZE = 50
SINCE = {"15 min": 900, "1 h": 3600, "24 h": 86400, "7 days": 7 * 86400, "all time": None}
KINDS = ("reply", "greeting", "shadow")
ROUTES = ("new", "n8n")


def act(confirmation: widgets.Confirmation, reason: str) -> widgets.Outcome:
    action, payload = confirmation.action, confirmation.payload
    if action == "pause":
        paused = bool(payload["paused"])
        data.set_paused(operator.actor, paused, reason)
        return widgets.Outcome(
            True, "Reply processing paused." if paused else "Reply processing resumed."
        )
    job_id = str(payload["job_id"])
    result = (
        data.retry_job(operator.actor, job_id, reason)
        if action == "retry"
        else data.cancel_job(operator.actor, job_id, reason)
    )
    return widgets.Outcome(result.ok, result.message)


def ask_pause(paused: bool) -> None:
    widgets.ask(
        widgets.Confirmation(
            action="pause",
            title="Pause reply processing?" if paused else "Resume reply processing?",
            body=(
                "Workers stop preparing and sending replies; new messages are still recorded "
                "and wait in the ledger. Customers of the new pipeline get **no reply** until "
                "you resume."
                if paused
                else "Workers pick up every waiting reply again, oldest first."
            ),
            confirm_label="Pause" if paused else "Resume",
            danger=paused,
            payload={"paused": paused},
        )
    )


def ask_job(action: str, job: JobDetail) -> None:
    excerpt = widgets.plain((job.inbound_content or "")[:160]) if job.inbound_content else "—"
    body = {
        "retry": (
            f"Job `{job.id}` goes back to **queued** with fresh attempts and a worker answers "
            f"the customer's message:\n\n> {excerpt}"
        ),
        "cancel": (
            f"Job `{job.id}` is **cancelled**: its reply will not be sent. The customer's "
            f"message stays unanswered by the AI broker:\n\n> {excerpt}"
        ),
    }[action]
    widgets.ask(
        widgets.Confirmation(
            action=action,
            title="Retry this job?" if action == "retry" else "Cancel this job?",
            body=body,
            confirm_label="Retry" if action == "retry" else "Cancel job",
            danger=action == "cancel",
            payload={"job_id": job.id},
        )
    )


def open_job(job_id: str) -> None:
    st.query_params["job"] = job_id


def close_job() -> None:
    st.query_params.pop("job", None)


def show_job(job: JobDetail) -> None:
    now = time.time()
    with st.container(border=True):
        st.markdown(f"#### Job `{job.id}` {widgets.state_badge(job.state)}")
        broker = names.get(job.broker_id or "", job.broker_id or "—")
        st.markdown(
            f"{job.kind} · route **{job.route}**"
            f"{f' ({job.route_reason})' if job.route_reason else ''} · conversation "
            f"**{job.conversation_id}** · broker **{broker}** · attempt **{job.attempts}** · "
            f"received {widgets.ago(job.received_at, now)}"
        )
        retryable = job.state in data.RETRYABLE_STATES
        cancellable = job.state in data.CANCELLABLE_STATES or (
            job.state == "running" and job.send_started_at is None
        )
        with st.container(horizontal=True):
            st.button(
                "Retry",
                icon=":material/replay:",
                key="job_retry",
                on_click=ask_job,
                args=("retry", job),
                disabled=locked or not retryable,
                help="Failed or cancelled jobs only.",
            )
            st.button(
                "Cancel",
                icon=":material/cancel:",
                key="job_cancel",
                on_click=ask_job,
                args=("cancel", job),
                disabled=locked or not cancellable,
                help="Only before the reply starts sending.",
            )
            st.button(
                "Close",
                icon=":material/close:",
                key="job_close",
                on_click=close_job,
            )
        left, right = st.columns(2)
        with left:
            st.markdown("**Customer message**")
            st.markdown(widgets.plain(job.inbound_content))
            for merged in job.merged:
                st.caption(
                    f"Also answers (merged {merged.job_id[:8]}): {widgets.plain(merged.content)}"
                )
        with right:
            label = "Reply" + (" (persona fallback text)" if job.used_fallback else "")
            st.markdown(f"**{label}**")
            st.markdown(widgets.plain(job.reply_text) if job.reply_text else "_no reply_")
        st.markdown("**Timings**")
        st.dataframe(
            [
                {"step": "received", "at": widgets.clock(job.received_at, tz), "after": "0 s"},
                *(
                    {
                        "step": step,
                        "at": widgets.clock(at, tz),
                        "after": widgets.seconds(at - job.received_at),
                    }
                    for step, at in (
                        ("due (human-like delay)", job.due_at),
                        ("started", job.started_at),
                        ("sending", job.send_started_at),
                        ("finished", job.finished_at),
                    )
                    if at is not None
                ),
            ],
            hide_index=True,
            key="job_timings",
            width=520,
        )
        if job.lease_owner:
            st.caption(
                f"Lease held by {job.lease_owner} until {widgets.clock(job.lease_expires_at, tz)}"
            )
        if job.escalation_reason:
            st.caption(f"Escalated: {job.escalation_reason.replace('_', ' ')}")
        if job.error or job.error_detail:
            st.markdown(":red[**Error**]")
            st.code(job.error or "", language=None, wrap_lines=True)
            if job.error_detail:
                with st.expander("Traceback", expanded=True, icon=":material/bug_report:"):
                    st.code(job.error_detail, language="python")
        with st.expander("Webhook payload", icon=":material/data_object:"):
            if job.inbound_payload:
                try:
                    st.json(json.loads(job.inbound_payload), expanded=2)
                except ValueError:
                    st.code(job.inbound_payload, language=None, wrap_lines=True)
            else:
                st.caption("No payload kept for this job (greetings and older jobs have none).")
        actions = data.operator_actions(job.id)
        if actions:
            st.markdown("**Operator actions**")
            for item in actions:
                st.caption(
                    f"{widgets.clock(item.at, tz)} · {item.actor} · {item.action}: "
                    f"{widgets.plain(item.reason)}"
                )


operator = auth.current_operator()
st.title("Jobs")
locked = not operator.can_act
key = data.key()
tz = widgets.timezone()
current = data.status()
names = {row.id: row.name for row in data.broker_rows(key, 3600)}

with st.container(horizontal=True, vertical_alignment="center"):
    paused = current.rollout.queue_paused
    st.markdown(
        ":red-badge[:material/pause: reply processing paused]"
        if paused
        else ":green-badge[:material/play_arrow: reply processing running]"
    )
    st.button(
        "Resume" if paused else "Pause",
        icon=":material/play_arrow:" if paused else ":material/pause:",
        key="queue_toggle",
        on_click=ask_pause,
        args=(not paused,),
        disabled=locked,
    )
    st.caption(
        f"{widgets.count(current.depth.pending)} ready · {widgets.count(current.depth.scheduled)} "
        f"scheduled · {widgets.count(current.overdue)} overdue · "
        f"{len(current.alive_workers)} workers alive"
    )

widgets.confirm_pending(act)

states = sorted(current.states, key=lambda s: -current.states[s])
chosen_states = st.pills(
    "State",
    states,
    selection_mode="multi",
    format_func=lambda s: f"{widgets.state_label(s)} · {current.states[s]:,}",
    key="jobs_states",
)
with st.container(horizontal=True, vertical_alignment="bottom"):
    since_label = st.selectbox("Received", list(SINCE), index=2, key="jobs_since", width=140)
    kinds = st.multiselect("Kind", KINDS, key="jobs_kinds", width=240, placeholder="all")
    routes = st.multiselect("Route", ROUTES, key="jobs_routes", width=180, placeholder="all")
    conversation = st.text_input(
        "Conversation", key="jobs_conversation", width=150, placeholder="id"
    )
    text = st.text_input(
        "Search", key="jobs_text", width=320, placeholder="job id or words of the message"
    )

query = data.job_filter(
    states=chosen_states or (),
    kinds=kinds,
    routes=routes,
    conversation=conversation,
    text=text,
    since_s=SINCE[since_label],
)
requested = st.session_state.get("jobs_page", 1)
page = data.search_jobs(key, query, requested, PAGE_SIZE)
pages = max(1, math.ceil(page.total / PAGE_SIZE))
if requested > pages:  # the filters left fewer pages
    st.session_state["jobs_page"] = 1
    page = data.search_jobs(key, query, 1, PAGE_SIZE)

st.caption(
    f"{page.total:,} jobs match · newest first · page {page.offset // PAGE_SIZE + 1} of {pages:,}"
)
if page.rows:
    now = time.time()
    selection = st.dataframe(
        widgets.coloured(
            [
                {
                    "received": widgets.clock(row.received_at, tz),
                    "state": widgets.state_label(row.state),
                    "kind": row.kind,
                    "route": row.route,
                    "conversation": row.conversation_id,
                    "broker": names.get(row.broker_id or "", row.broker_id or ""),
                    "attempts": row.attempts,
                    "latency": widgets.seconds(row.latency_s),
                    "message": row.message or "",
                    "error": row.error or "",
                    "id": row.id,
                }
                for row in page.rows
            ],
            "state",
            {widgets.state_label(state): colour for state, colour in widgets.STATE_COLOURS.items()},
        ),
        hide_index=True,
        key="jobs_table",
        on_select="rerun",
        selection_mode="single-row",
        column_config={
            "message": st.column_config.TextColumn("message", width="large"),
            "error": st.column_config.TextColumn("error", width="medium"),
            "id": st.column_config.TextColumn("id", width="small"),
        },
    )
    if selection.selection.rows:
        chosen = page.rows[selection.selection.rows[0]].id
        if st.query_params.get("job") != chosen:
            open_job(chosen)
else:
    widgets.empty_state("No jobs match these filters.")
with st.container(horizontal=True, vertical_alignment="center"):
    if pages > 1:
        st.pagination(pages, key="jobs_page")
    st.download_button(
        "Export CSV",
        data=data.jobs_csv(key, query),
        file_name="jobs.csv",
        mime="text/csv",
        icon=":material/download:",
        key="jobs_export",
        help=f"The matching jobs, newest first (up to {data.JOBS_EXPORT_LIMIT:,}).",
    )

st.subheader("Job detail")
st.text_input(
    "Open a job by id",
    key="jobs_open",
    placeholder="paste a job id",
    on_change=lambda: open_job(str(st.session_state.get("jobs_open", "")).strip()),
)
job_id = st.query_params.get("job")
if job_id:
    detail = data.job_detail(job_id)
    if detail is None:
        st.warning(f"No job `{job_id}` in the ledger.")
    else:
        show_job(detail)
else:
    st.caption(
        "Select a row in the table, or paste a job id, to see its message, reply, "
        "timings, error and traceback."
    )

with st.expander("Recent operator actions", icon=":material/history:"):
    recent = data.operator_actions(limit=30)
    if recent:
        st.dataframe(
            [
                {
                    "when": widgets.clock(a.at, tz),
                    "who": a.actor,
                    "action": a.action,
                    "target": a.target,
                    "reason": a.reason,
                }
                for a in recent
            ],
            hide_index=True,
            key="operator_actions_table",
        )
    else:
        st.caption(
            "No retries, cancellations or parked intake messages put back yet. Pauses and "
            "rollout changes are in the Rollout page's audit log."
        )
