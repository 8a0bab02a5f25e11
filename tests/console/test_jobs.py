"""Jobs: the ledger with filters and search, a job's detail with the traceback, retry of a
failed job, cancellation of a pending one, and pausing the queue, each audited."""

from __future__ import annotations

from collections.abc import Callable

from streamlit.testing.v1 import AppTest

from app.adapters.huey_queue import build_huey
from app.config import Settings
from app.domain.jobs import JobState
from app.domain.rollout import RolloutState
from app.store.analytics import Analytics
from app.store.base import Store
from tests.console.conftest import OPERATOR, no_failures, table


def confirm(app: AppTest, reason: str) -> AppTest:
    app.text_area(key="dialog_reason").input(reason)
    return app.button(key="dialog_confirm").click().run()


def open_job(console: Callable[..., AppTest], job_id: str) -> AppTest:
    app = console("jobs")
    app.text_input(key="jobs_open").input(job_id).run()
    return app


def test_ledger_lists_jobs_newest_first_and_filters_by_state(
    console: Callable[..., AppTest], store: Store
) -> None:
    app = console("jobs")
    no_failures(app)
    listed = table(app, "state")
    assert len(listed) == 50
    assert list(listed["id"]) == [j.id for j in store.list_jobs(limit=50)]
    app.pills(key="jobs_states").set_value(["failed"]).run()
    failed = table(app, "state")
    assert set(failed["state"]) == {"failed"}
    matches = next(c.value for c in app.caption if "jobs match" in c.value)
    assert matches.startswith(f"{store.job_state_counts()['failed']:,} jobs match")


def test_search_by_conversation_and_by_words(console: Callable[..., AppTest], store: Store) -> None:
    job = store.list_jobs(states=[JobState.FAILED], limit=1)[0]
    app = console("jobs")
    app.selectbox(key="jobs_since").set_value("all time")
    app.text_input(key="jobs_conversation").input(str(job.conversation_id)).run()
    assert set(table(app, "conversation")["conversation"]) == {job.conversation_id}
    app.text_input(key="jobs_conversation").input("")
    app.text_input(key="jobs_text").input(job.id[:10]).run()
    assert list(table(app, "id")["id"]) == [job.id]


def test_job_detail_shows_message_reply_timings_and_traceback(
    console: Callable[..., AppTest], store: Store
) -> None:
    job = store.list_jobs(states=[JobState.FAILED], limit=1)[0]
    app = open_job(console, job.id)
    no_failures(app)
    assert any(job.id in m.value and "failed" in m.value for m in app.markdown)
    code = [c.value for c in app.code]
    assert job.error in code
    assert any(c.startswith("Traceback (most recent call last)") for c in code)
    steps = list(table(app, "step")["step"])
    assert steps[0] == "received" and "finished" in steps
    assert not app.button(key="job_retry").disabled
    assert app.button(key="job_cancel").disabled


def test_retry_re_enqueues_a_failed_job(
    console: Callable[..., AppTest], store: Store, analytics: Analytics
) -> None:
    job = store.list_jobs(states=[JobState.FAILED], limit=1)[0]
    huey = build_huey(Settings.from_env())
    pending_before = huey.pending_count()
    app = open_job(console, job.id)
    app.button(key="job_retry").click().run()
    confirm(app, "OpenAI recovered; answer this customer")
    no_failures(app)
    after = store.get_job(job.id)
    assert after is not None
    assert (after.state, after.attempts, after.error) == (JobState.QUEUED, 0, None)
    assert huey.pending_count() == pending_before + 1  # a prepare task for the worker
    action = analytics.operator_actions(target=job.id)[0]
    assert (action.actor, action.action, action.reason) == (
        OPERATOR.actor,
        "retry",
        "OpenAI recovered; answer this customer",
    )
    assert any("re-queued" in t.value for t in app.toast)


def test_cancel_a_pending_job_keeps_the_operator_on_the_job(
    console: Callable[..., AppTest], store: Store
) -> None:
    job = store.list_jobs(states=[JobState.WAITING], limit=1)[0]
    app = open_job(console, job.id)
    assert app.button(key="job_retry").disabled
    app.button(key="job_cancel").click().run()
    confirm(app, "customer called in; a human answers")
    no_failures(app)
    after = store.get_job(job.id)
    assert after is not None and after.state is JobState.CANCELLED
    assert after.error == f"cancelled by {OPERATOR.actor}: customer called in; a human answers"


def test_pause_and_resume_the_queue_are_audited(
    console: Callable[..., AppTest], store: Store
) -> None:
    app = console("jobs")
    app.button(key="queue_toggle").click().run()
    confirm(app, "Chatwoot maintenance window")
    no_failures(app)
    assert store.get_rollout(initial=RolloutState()).queue_paused
    entry = store.audit_log(limit=1)[0]
    assert (entry.actor, entry.action, entry.reason) == (
        OPERATOR.actor,
        "pause",
        "Chatwoot maintenance window",
    )
    assert app.button(key="queue_toggle").label == "Resume"
    app.button(key="queue_toggle").click().run()
    confirm(app, "maintenance over")
    assert not store.get_rollout(initial=RolloutState()).queue_paused
    assert store.audit_log(limit=1)[0].action == "resume"


def test_unknown_job_id_says_so(console: Callable[..., AppTest]) -> None:
    app = open_job(console, "0" * 32)
    assert not app.exception
    assert "No job" in app.warning[0].value
