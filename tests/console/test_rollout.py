"""Rollout: moving the slider or a toggle asks for confirmation and a reason, then writes the
state and the audit entry; rollback cancels unsent replies and hands them to n8n."""

from __future__ import annotations

from collections.abc import Callable

from streamlit.testing.v1 import AppTest

from app.domain.jobs import JobState
from app.domain.rollout import RolloutState
from app.store.base import Store
from tests.console.conftest import OPERATOR, FakeN8n, no_failures

INITIAL = RolloutState()


def confirm(app: AppTest, reason: str) -> AppTest:
    app.text_area(key="dialog_reason").input(reason)
    return app.button(key="dialog_confirm").click().run()


def test_moving_the_slider_writes_the_state_and_the_audit(
    console: Callable[..., AppTest], store: Store
) -> None:
    app = console("rollout")
    no_failures(app)
    before = store.get_rollout(initial=INITIAL)
    audit_before = len(store.audit_log(limit=1000))
    app.slider(key="rollout_pct").set_value(75).run()
    # The dialog says what will change; nothing is written yet.
    assert any("50 % → 75 %" in m.value for m in app.markdown)
    assert store.get_rollout(initial=INITIAL) == before
    confirm(app, "p95 steady at 9 s for three hours")
    no_failures(app)
    after = store.get_rollout(initial=INITIAL)
    assert after.percentage == 75 and after.updated_by == OPERATOR.actor
    entry = store.audit_log(limit=1)[0]
    assert len(store.audit_log(limit=1000)) == audit_before + 1
    assert (entry.actor, entry.action, entry.reason) == (
        OPERATOR.actor,
        "set_rollout",
        "p95 steady at 9 s for three hours",
    )
    assert (entry.before["percentage"], entry.after["percentage"]) == (50, 75)
    assert app.slider(key="rollout_pct").value == 75
    assert any("Rollout changed" in t.value for t in app.toast)


def test_a_change_needs_a_reason_and_can_be_cancelled(
    console: Callable[..., AppTest], store: Store
) -> None:
    app = console("rollout")
    before = store.get_rollout(initial=INITIAL)
    app.toggle(key="rollout_shadow").set_value(False).run()
    app.button(key="dialog_confirm").click().run()
    assert any("Say why" in w.value for w in app.warning)
    assert store.get_rollout(initial=INITIAL) == before
    app.button(key="dialog_cancel").click().run()
    assert not app.get("text_area")  # the dialog is closed
    assert app.toggle(key="rollout_shadow").value is True  # the control shows the live state
    assert store.get_rollout(initial=INITIAL) == before


def test_disabling_n8n_below_100_percent_is_refused(
    console: Callable[..., AppTest], store: Store
) -> None:
    app = console("rollout")
    audit_before = len(store.audit_log(limit=1000))
    app.toggle(key="rollout_n8n").set_value(False).run()
    assert not app.get("text_area")  # refused before any dialog
    assert any("raise the percentage to 100 first" in t.value for t in app.toast)
    assert store.get_rollout(initial=INITIAL).n8n_enabled
    assert len(store.audit_log(limit=1000)) == audit_before


def test_rollback_cancels_unsent_replies_and_hands_them_to_n8n(
    console: Callable[..., AppTest], store: Store, n8n: FakeN8n
) -> None:
    unsent = [
        job
        for job in store.list_jobs(
            states=[JobState.QUEUED, JobState.WAITING, JobState.RUNNING], limit=1000
        )
        if job.kind == "reply" and job.route == "new" and job.send_started_at is None
    ]
    assert unsent, "the seeded store has replies in flight"
    received_before = len(n8n.received)
    app = console("rollout")
    app.button(key="rollback").click().run()
    assert any(f"{len(unsent):,} unsent replies" in m.value for m in app.markdown)
    confirm(app, "fallback rate climbing after the model change")
    no_failures(app)
    assert store.get_rollout(initial=INITIAL).percentage == 0
    for job in unsent:
        after = store.get_job(job.id)
        assert after is not None and after.state is JobState.FORWARDED, (job.id, after)
    assert len(n8n.received) - received_before == len(unsent)
    entry = store.audit_log(limit=1)[0]
    assert (entry.actor, entry.action) == (OPERATOR.actor, "rollback")
    assert any(f"{len(unsent)} unsent replies cancelled" in t.value for t in app.toast)


def test_guard_thresholds_can_be_changed_with_a_reason(
    console: Callable[..., AppTest], store: Store
) -> None:
    app = console("rollout")
    app.number_input[0].set_value(0.02)  # max failure rate
    next(b for b in app.button if b.label == "Review change…").click().run()
    confirm(app, "tighter guard during the 75 % step")
    no_failures(app)
    guard = store.get_rollout(initial=INITIAL).guard
    assert guard.max_failure_rate == 0.02
    assert store.audit_log(limit=1)[0].after["guard"]["max_failure_rate"] == 0.02


def test_n8n_share_shows_what_it_took_answered_and_left_silent(
    console: Callable[..., AppTest], sql: Callable[..., None]
) -> None:
    # Two of the seeded day's recent forwards were never answered: the watchdog handed them on.
    sql(
        "UPDATE reply_jobs SET state = 'queued', route = 'new', route_reason = 'n8n_silent', "
        "finished_at = NULL WHERE id IN (SELECT id FROM reply_jobs WHERE state = 'forwarded' "
        "ORDER BY received_at DESC LIMIT 2)"
    )
    app = console("rollout")
    no_failures(app)
    tiles = {m.label: m for m in app.metric}
    assert int(tiles["n8n took"].value.replace(",", "")) > 2
    assert int(tiles["n8n answered"].value.replace(",", "")) > 0
    assert tiles["n8n silent"].value == "2"
    assert tiles["n8n silent"].delta.endswith("% of taken")
    assert tiles["Median reply"].value.endswith("s")
    (caption,) = [c.value for c in app.caption if c.value.startswith("Median reply in the last")]
    assert "n8n " in caption and "new pipeline " in caption
