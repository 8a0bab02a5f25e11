"""The operations service: every operator action, whoever asks (admin API, console, command
line), is done one way and leaves one audit row; an action that cannot be done leaves none."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from app.bootstrap import Services, build_services, prepare_store
from app.config import Settings
from app.domain.jobs import JobState
from app.store.models import Verdict
from app.web import create_app
from console.seed import SeedPlan, seed_store

ADMIN_TOKEN = "operations-admin-token"
ACTOR = "console:Wei Ling"
NOW = 1_796_400_000.0


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    seed_store(tmp_path / "store.db", SeedPlan(jobs=300, comparisons=20, live=True), now=NOW)
    wired = build_services(Settings(data_dir=tmp_path, admin_token=ADMIN_TOKEN))
    prepare_store(wired.store)
    yield wired
    wired.analytics.close()
    wired.store.close()


def test_retry_and_cancel_are_audited_and_refusals_are_not(services: Services) -> None:
    operations, store = services.operations, services.store
    failed = store.list_jobs(states=[JobState.FAILED], limit=1)[0]
    sent = store.list_jobs(states=[JobState.SENT], limit=1)[0]
    waiting = store.list_jobs(states=[JobState.WAITING], limit=1)[0]
    pending = services.queue.huey.pending_count()

    assert not operations.retry_job(actor=ACTOR, job_id=sent.id, reason="by mistake").ok
    assert not operations.cancel_job(actor=ACTOR, job_id=sent.id, reason="too late").ok
    assert services.analytics.operator_actions() == []

    retried = operations.retry_job(actor=ACTOR, job_id=failed.id, reason="OpenAI is back")
    assert retried.ok, retried.message
    assert services.queue.huey.pending_count() == pending + 1
    cancelled = operations.cancel_job(actor=ACTOR, job_id=waiting.id, reason="a human answers")
    assert cancelled.ok, cancelled.message
    after = store.get_job(waiting.id)
    assert after is not None and after.state is JobState.CANCELLED

    rows = [(a.actor, a.action, a.target, a.reason) for a in services.analytics.operator_actions()]
    assert rows == [
        (ACTOR, "cancel", waiting.id, "a human answers"),
        (ACTOR, "retry", failed.id, "OpenAI is back"),
    ]


def test_a_verdict_is_audited_only_when_the_comparison_exists(services: Services) -> None:
    [comparison] = services.store.list_comparisons(limit=1)
    operations = services.operations
    assert not operations.set_verdict(
        actor=ACTOR, comparison_id=10**9, verdict=Verdict.BETTER, note="no such pair"
    )
    assert operations.set_verdict(
        actor=ACTOR, comparison_id=comparison.id, verdict=Verdict.WORSE, note="  wrong rate "
    )
    [action] = services.analytics.operator_actions()
    assert (action.action, action.target, action.reason) == (
        "verdict",
        f"comparison {comparison.id}",
        "worse: wrong rate",
    )


def test_without_redis_there_is_nothing_to_put_back_and_nothing_audited(
    services: Services,
) -> None:
    result = services.operations.replay_parked(actor=ACTOR, reason="workers fixed")
    assert not result.ok and "REDIS_URL" in result.message
    assert services.analytics.operator_actions() == []


@pytest.fixture
def admin(services: Services) -> Iterator[FlaskClient]:
    with create_app(services=services).test_client() as client:
        yield client


def test_the_admin_api_and_the_service_leave_the_same_audit_row(
    services: Services, admin: FlaskClient
) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    answer = admin.post(
        "/api/admin/queue/pause",
        json={"reason": "Chatwoot upgrade", "actor": "wei"},
        headers=headers,
    )
    assert answer.status_code == 200, answer.json
    services.operations.set_paused(actor=ACTOR, paused=False, reason="upgrade done")
    entries = services.store.audit_log(limit=2)
    assert [(e.actor, e.action, e.reason) for e in entries] == [
        (ACTOR, "resume", "upgrade done"),
        ("admin-api:wei", "pause", "Chatwoot upgrade"),
    ]
