"""Migration control in-process: the admin API, routing between n8n and the new pipeline, the
n8n circuit breaker, shadow comparisons and rollback (docs/migration.md, docs/api.md#admin-api).

The receiver runs in Flask's test client against real sandboxes over HTTP: an n8n workflow that
posts its replies into a Chatwoot sandbox. No worker runs, so jobs for the new pipeline stay
queued where the tests can see them.
"""

from __future__ import annotations

import copy
import itertools
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from app.bootstrap import Services, build_services, prepare_store
from app.config import Settings
from app.domain.circuit import COOLDOWN_S, FAILURE_THRESHOLD, CircuitPosition
from app.domain.events import InboundMessage, Sender
from app.domain.jobs import JobKind, JobState, ReplyJob
from app.domain.rollout import GuardThresholds, RolloutChange, bucket
from app.domain.webhook_auth import sign
from app.sandbox.chatwoot import ChatwootSandbox
from app.sandbox.n8n import SENDER as N8N_SENDER
from app.sandbox.n8n import WEBHOOK_PATH, N8nSandbox
from app.services.forwarding import N8N_CIRCUIT, CircuitBreaker, N8nWatchdog
from app.services.guard import GUARD_ACTOR, RolloutGuard
from app.services.rollout import CACHE_TTL_S
from app.web import create_app
from tests.support.fixtures import chatwoot_fixture

SECRET = "migration-test-secret"
ADMIN = "adm"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
_message_ids = itertools.count(700_000)


# -- fixtures -------------------------------------------------------------------------------
def settings_for(data_dir: Path, n8n: N8nSandbox | None, **overrides: Any) -> Settings:
    fields: dict[str, Any] = {
        "data_dir": data_dir,
        "chatwoot_webhook_secret": SECRET,
        "admin_token": ADMIN,
        "n8n_webhook_url": f"{n8n.url}{WEBHOOK_PATH}" if n8n is not None else None,
        "n8n_sender": Sender.parse(N8N_SENDER) if n8n is not None else None,
        "n8n_timeout_s": 0.5,
    }
    return Settings(**{**fields, **overrides})


@pytest.fixture
def make_services(tmp_path: Path) -> Iterator[Callable[..., Services]]:
    built: list[Services] = []

    def make(n8n: N8nSandbox | None, **overrides: Any) -> Services:
        wired = build_services(settings_for(tmp_path / "data", n8n, **overrides))
        prepare_store(wired.store)
        built.append(wired)
        return wired

    yield make
    for wired in built:
        wired.store.close()


@pytest.fixture
def services(make_services: Callable[..., Services], n8n: N8nSandbox) -> Services:
    return make_services(n8n)


@pytest.fixture
def client(services: Services) -> Iterator[FlaskClient]:
    with create_app(services=services).test_client() as test_client:
        yield test_client


# -- helpers --------------------------------------------------------------------------------
def new_conversation(chatwoot: ChatwootSandbox, *, new_pipeline: bool | None = None) -> int:
    """A conversation that exists in the Chatwoot sandbox (n8n posts its reply there), in the
    bucket asked for at 30 % (None: any)."""
    while True:
        n = next(_message_ids)
        _, conversation = chatwoot.create_lead_conversation(
            "Tan Wei Ming", f"lead{n}@example.com", f"+659{n % 10_000_000:07d}"
        )
        cid = int(conversation["id"])
        if new_pipeline is None or (bucket(cid) <= 30) == new_pipeline:
            return cid


def customer_message(conversation_id: int, content: str | None = None) -> dict[str, Any]:
    payload = copy.deepcopy(chatwoot_fixture("message_created.incoming_contact.json"))
    message_id = next(_message_ids)
    payload["id"] = message_id
    payload["conversation"]["id"] = conversation_id
    payload["conversation"]["messages"][0].update(id=message_id, conversation_id=conversation_id)
    if content is not None:
        payload["content"] = content
    return payload


def post(client: FlaskClient, payload: dict[str, Any], delivery: str | None = None) -> Any:
    body = json.dumps(payload, separators=(",", ":")).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "X-Chatwoot-Timestamp": timestamp,
        "X-Chatwoot-Signature": "sha256=" + sign(SECRET, timestamp, body),
    }
    if delivery is not None:
        headers["X-Chatwoot-Delivery"] = delivery
    response = client.post("/webhooks/chatwoot", data=body, headers=headers)
    assert response.status_code == 200, response.json
    return response.json


def put_rollout(client: FlaskClient, **body: Any) -> Any:
    return client.put("/api/admin/rollout", json=body, headers=AUTH)


def set_rollout(client: FlaskClient, **body: Any) -> None:
    response = put_rollout(client, reason="test", **body)
    assert response.status_code == 200, response.json


def status(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/api/admin/migration-status", headers=AUTH)
    assert response.status_code == 200
    return response.json


def ledger_job(services: Services, job_id: str) -> ReplyJob:
    found = services.store.get_job(job_id)
    assert found is not None
    return found


def replies_to(services: Services, conversation_id: int) -> list[ReplyJob]:
    return [
        j
        for j in services.store.list_jobs(conversation_id=conversation_id)
        if j.kind is JobKind.REPLY
    ]


def n8n_message_ids(n8n: N8nSandbox) -> list[int]:
    return [record["message_id"] for record in n8n.received()]


def pending(services: Services) -> int:
    return services.queue.depth()["pending"]


# -- the admin API's door -------------------------------------------------------------------
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {ADMIN}"},
        {"Authorization": ADMIN},
        {"Authorization": f"Bearer {ADMIN}x"},
    ],
)
def test_admin_api_needs_the_bearer_token(
    client: FlaskClient, services: Services, headers: dict[str, str]
) -> None:
    for method, path, body in [
        ("get", "/api/admin/migration-status", None),
        ("put", "/api/admin/rollout", {"percentage": 100, "reason": "sneaky"}),
        ("post", "/api/admin/rollback", {"reason": "sneaky"}),
        ("post", "/api/admin/queue/pause", None),
    ]:
        response = getattr(client, method)(path, json=body, headers=headers)
        assert response.status_code == 401, (method, path)
        assert response.is_json and response.json["error"] == "unauthorized"
    state = services.rollout.current(fresh=True)
    assert (state.percentage, state.queue_paused) == (0, False)
    assert services.store.audit_log() == []


def test_admin_api_is_disabled_without_admin_token(
    make_services: Callable[..., Services], n8n: N8nSandbox
) -> None:
    wired = make_services(n8n, admin_token=None)
    client = create_app(services=wired).test_client()
    for headers in ({}, AUTH):
        response = client.get("/api/admin/migration-status", headers=headers)
        assert response.status_code == 403
        assert response.json["error"] == "admin_api_disabled"
        assert "ADMIN_TOKEN" in response.json["detail"]


# -- PUT /api/admin/rollout -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"percentage": 50}, "reason"),
        ({"percentage": 50, "reason": "   "}, "reason"),
        ({"percentage": 50, "reason": "x" * 501}, "reason"),
        ({"percentage": 101, "reason": "r"}, "percentage"),
        ({"percentage": -1, "reason": "r"}, "percentage"),
        ({"percentage": "50", "reason": "r"}, "percentage"),
        ({"percentage": True, "reason": "r"}, "percentage"),
        ({"percentage": 50.5, "reason": "r"}, "percentage"),
        ({"percentage": None, "reason": "r"}, "percentage"),
        ({"percentage": 50, "reason": "r", "colour": "blue"}, "colour"),
        ({"shadow": "yes", "reason": "r"}, "shadow"),
        ({"n8n_enabled": 0, "reason": "r"}, "n8n_enabled"),
        ({"reason": "r"}, "body"),
        ({"guard": "strict", "reason": "r"}, "guard"),
        ({"guard": {"max_failure_rate": "high"}, "reason": "r"}, "guard.max_failure_rate"),
        ({"guard": {"enabled": "yes"}, "reason": "r"}, "guard.enabled"),
        ({"guard": {"bogus": 1}, "reason": "r"}, "guard.bogus"),
        ({"guard": {"max_failure_rate": 2}, "reason": "r"}, "guard.max_failure_rate"),
        ({"guard": {"max_fallback_rate": 0}, "reason": "r"}, "guard.max_fallback_rate"),
        ({"guard": {"window_s": 10}, "reason": "r"}, "guard.window_s"),
        # 1e300 s would keep every reply in the window forever; the guard would never judge.
        ({"guard": {"window_s": 1e300}, "reason": "r"}, "guard.window_s"),
        ({"guard": {"max_p95_latency_s": 1e300}, "reason": "r"}, "guard.max_p95_latency_s"),
        ({"guard": {"min_sample": 0}, "reason": "r"}, "guard.min_sample"),
        ({"guard": {"min_sample": 1e300}, "reason": "r"}, "guard.min_sample"),
        ({"guard": {"min_sample": 2.5}, "reason": "r"}, "guard.min_sample"),
    ],
)
def test_invalid_rollout_changes_are_422_and_change_nothing(
    client: FlaskClient, services: Services, body: dict[str, Any], field: str
) -> None:
    response = put_rollout(client, **body)
    assert response.status_code == 422
    assert response.json["error"] == "invalid_rollout"
    assert field in [error["field"] for error in response.json["errors"]]
    assert services.rollout.current(fresh=True).percentage == 0
    assert services.store.audit_log() == []


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"n8n_enabled": False, "percentage": 60}, "raise the percentage to 100 first"),
        ({"n8n_enabled": False}, "n8n can only be disabled at 100"),
    ],
)
def test_rollout_changes_breaking_a_rule_are_refused_naming_it(
    client: FlaskClient, services: Services, body: dict[str, Any], named: str
) -> None:
    response = put_rollout(client, reason="try", **body)
    assert response.status_code == 422
    assert response.json["error"] == "rollout_refused"
    assert named in response.json["detail"]
    state = services.rollout.current(fresh=True)
    assert (state.percentage, state.n8n_enabled) == (0, True)
    assert state.guard == GuardThresholds()  # unchanged defaults
    assert services.store.audit_log() == []


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
@pytest.mark.parametrize("threshold", ["max_p95_latency_s", "window_s", "min_sample"])
def test_a_guard_threshold_that_is_not_a_finite_number_is_refused_by_name(
    client: FlaskClient, services: Services, literal: str, threshold: str
) -> None:
    """NaN compares false with everything: a NaN window or latency disabled the guard; an
    Infinity sample answered 500."""
    response = client.put(
        "/api/admin/rollout",
        data=f'{{"reason": "r", "guard": {{"{threshold}": {literal}}}}}',
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json["error"] == "invalid_number"
    assert response.json["field"] == f"$.guard.{threshold}"
    assert services.rollout.current(fresh=True).guard == GuardThresholds()
    assert services.store.audit_log() == []


def test_rollout_body_must_be_json(client: FlaskClient) -> None:
    response = client.put(
        "/api/admin/rollout", data="percentage=50", headers={**AUTH, "Content-Type": "text/plain"}
    )
    assert response.status_code == 415 and response.is_json


def test_valid_change_is_stored_audited_and_reaches_another_receiver(
    client: FlaskClient, services: Services, make_services: Callable[..., Services], n8n: N8nSandbox
) -> None:
    # A second receiver process on the same DATA_DIR, its cache warm with the old state.
    other = make_services(n8n)
    other_client = create_app(services=other).test_client()
    assert "ai_broker_rollout_percentage 0" in other_client.get("/metrics").text

    response = put_rollout(
        client,
        percentage=30,
        shadow=True,
        guard={"max_failure_rate": 0.1, "min_sample": 10},
        reason="first step",
        actor="alice",
    )
    changed_at = time.monotonic()
    assert response.status_code == 200
    rollout = response.json["rollout"]
    assert (rollout["percentage"], rollout["shadow"], rollout["n8n_enabled"]) == (30, True, True)
    assert rollout["guard"]["max_failure_rate"] == 0.1 and rollout["guard"]["min_sample"] == 10
    assert rollout["updated_by"] == "admin-api:alice"

    stored = services.store.get_rollout(initial=services.rollout.current())
    assert (stored.percentage, stored.shadow, stored.guard.min_sample) == (30, True, 10)
    (entry,) = services.store.audit_log()
    assert (entry.actor, entry.action, entry.reason, entry.automatic) == (
        "admin-api:alice",
        "set_rollout",
        "first step",
        False,
    )
    assert (entry.before["percentage"], entry.before["shadow"]) == (0, False)
    assert (entry.after["percentage"], entry.after["shadow"]) == (30, True)
    assert entry.after["guard"]["max_failure_rate"] == 0.1
    assert abs(entry.at - time.time()) < 5

    while "ai_broker_rollout_percentage 30" not in other_client.get("/metrics").text:
        assert time.monotonic() - changed_at < 2.0, "the other receiver never saw the change"
        time.sleep(0.02)
    seen_after = time.monotonic() - changed_at
    assert seen_after <= 2 * CACHE_TTL_S
    assert other.rollout.current().shadow is True
    # Without an actor, the audit says it was the admin API.
    set_rollout(client, percentage=40)
    assert services.store.audit_log()[0].actor == "admin-api"


def test_partial_guard_change_keeps_thresholds_another_receiver_just_set(
    client: FlaskClient, make_services: Callable[..., Services], n8n: N8nSandbox
) -> None:
    other = make_services(n8n)
    other_client = create_app(services=other).test_client()
    assert other.rollout.current().guard.max_failure_rate == 0.05  # its cache is warm
    set_rollout(client, guard={"max_failure_rate": 0.1})
    response = put_rollout(other_client, guard={"min_sample": 5}, reason="smaller sample")
    assert response.status_code == 200
    guard = response.json["rollout"]["guard"]
    assert (guard["max_failure_rate"], guard["min_sample"]) == (0.1, 5)


# -- routing --------------------------------------------------------------------------------
def test_at_zero_percent_messages_are_forwarded_to_n8n(
    client: FlaskClient, services: Services, n8n: N8nSandbox, chatwoot: ChatwootSandbox
) -> None:
    cid = new_conversation(chatwoot)
    payload = customer_message(cid, "Can I refinance my HDB loan?")
    answer = post(client, payload)
    assert answer["status"] == "accepted"
    assert (answer["reason"], answer["route"]) == ("forwarded_to_n8n", "n8n")
    n8n.drain()  # the workflow runs after acknowledging the webhook
    (received,) = n8n.received()
    assert received["payload"] == payload and received["handled"]
    forwarded = ledger_job(services, answer["job_id"])
    assert (forwarded.state, forwarded.route, forwarded.route_reason) == (
        JobState.FORWARDED,
        "n8n",
        "bucket",
    )
    assert pending(services) == 0  # nothing for the new pipeline
    # n8n answered the customer in Chatwoot.
    assert chatwoot.messages(cid)[-1]["content_attributes"] == {"n8n": True}


def test_at_100_percent_messages_are_scheduled_for_the_new_pipeline(
    client: FlaskClient, services: Services, n8n: N8nSandbox, chatwoot: ChatwootSandbox
) -> None:
    set_rollout(client, percentage=100)
    answer = post(client, customer_message(new_conversation(chatwoot)))
    assert (answer["status"], answer["reason"], answer["route"]) == (
        "accepted",
        "customer_message",
        "new",
    )
    scheduled = ledger_job(services, answer["job_id"])
    # Admitted in the receiver's one store call: broker assigned, capacity held, delay set.
    assert (scheduled.state, scheduled.route) == (JobState.WAITING, "new")
    assert scheduled.capacity_held and scheduled.broker_id is not None
    assert n8n.received() == []
    assert pending(services) == 1


def test_a_conversation_keeps_its_route_at_30_percent(
    client: FlaskClient, services: Services, n8n: N8nSandbox, chatwoot: ChatwootSandbox
) -> None:
    set_rollout(client, percentage=30)
    to_new = [new_conversation(chatwoot, new_pipeline=True) for _ in range(3)]
    to_n8n = [new_conversation(chatwoot, new_pipeline=False) for _ in range(3)]
    for _ in range(3):
        for cid in to_new + to_n8n:
            answer = post(client, customer_message(cid))
            assert answer["route"] == ("new" if cid in to_new else "n8n")
    for cid in to_new + to_n8n:
        jobs = replies_to(services, cid)
        assert len(jobs) == 3
        assert {j.route for j in jobs} == {"new" if cid in to_new else "n8n"}
    assert sorted(set(r["conversation_id"] for r in n8n.received())) == sorted(to_n8n)
    assert len(n8n.received()) == 9
    assert pending(services) == 9


def test_duplicates_on_the_n8n_path_are_not_forwarded_twice(
    client: FlaskClient, services: Services, n8n: N8nSandbox, chatwoot: ChatwootSandbox
) -> None:
    payload = customer_message(new_conversation(chatwoot))
    assert post(client, payload, delivery="d-1")["reason"] == "forwarded_to_n8n"
    assert post(client, payload, delivery="d-1") == {
        "status": "duplicate",
        "reason": "delivery_already_received",
    }
    assert post(client, payload, delivery="d-2") == {
        "status": "duplicate",
        "reason": "message_already_received",
    }
    assert post(client, payload)["status"] == "duplicate"
    assert n8n_message_ids(n8n) == [payload["id"]]
    assert services.store.job_state_counts() == {"forwarded": 1}


# -- when n8n fails -------------------------------------------------------------------------
def test_n8n_error_hands_the_message_to_the_new_pipeline(
    client: FlaskClient, services: Services, n8n: N8nSandbox, chatwoot: ChatwootSandbox
) -> None:
    n8n.faults.set(fail_next=1, fail_next_status=500)
    answer = post(client, customer_message(new_conversation(chatwoot)))
    assert (answer["status"], answer["reason"], answer["route"]) == (
        "accepted",
        "n8n_failed",
        "new",
    )
    queued = ledger_job(services, answer["job_id"])
    assert (queued.state, queued.route, queued.route_reason) == (
        JobState.QUEUED,
        "new",
        "n8n_failed",
    )
    assert pending(services) == 1
    assert services.forwarder is not None
    assert services.forwarder.breaker.state().consecutive_failures == 1
    # The next message goes to n8n again, and its success resets the count.
    assert post(client, customer_message(new_conversation(chatwoot)))["reason"] == (
        "forwarded_to_n8n"
    )
    assert services.forwarder.breaker.state().consecutive_failures == 0


def test_n8n_timeout_hands_the_message_to_the_new_pipeline(
    client: FlaskClient, services: Services, n8n: N8nSandbox, chatwoot: ChatwootSandbox
) -> None:
    # A webhook that answers only when the workflow is done, slower than N8N_TIMEOUT_S (0.5 s).
    n8n.configure(reply_delay_ms=2000, respond="when_done")
    started = time.monotonic()
    answer = post(client, customer_message(new_conversation(chatwoot)))
    assert time.monotonic() - started < 1.5
    assert (answer["reason"], answer["route"]) == ("n8n_failed", "new")
    assert ledger_job(services, answer["job_id"]).state is JobState.QUEUED
    n8n.configure(reply_delay_ms=0)


@pytest.mark.parametrize("state", ["starting", "unregistered"])
def test_n8n_starting_up_or_without_its_workflow_does_not_take_the_message(
    client: FlaskClient,
    services: Services,
    n8n: N8nSandbox,
    chatwoot: ChatwootSandbox,
    state: str,
) -> None:
    """n8n's start-up page answers 200 and an unregistered webhook 404: neither ran the
    workflow, so the new pipeline answers instead of nobody."""
    n8n.configure(state=state)
    answer = post(client, customer_message(new_conversation(chatwoot)))
    assert (answer["reason"], answer["route"]) == ("n8n_failed", "new")
    assert ledger_job(services, answer["job_id"]).state is JobState.QUEUED
    assert n8n.received() == []


def test_circuit_opens_after_repeated_failures_and_recovers(
    client: FlaskClient, services: Services, n8n: N8nSandbox, chatwoot: ChatwootSandbox
) -> None:
    # The workflow receives each message (so the test can count calls) and answers 500.
    n8n.configure(chatwoot_url=None, respond="when_done")
    for _ in range(FAILURE_THRESHOLD):
        assert post(client, customer_message(new_conversation(chatwoot)))["reason"] == "n8n_failed"
    assert len(n8n.received()) == FAILURE_THRESHOLD

    answer = post(client, customer_message(new_conversation(chatwoot)))
    assert (answer["status"], answer["reason"], answer["route"]) == (
        "accepted",
        "n8n_circuit_open",
        "new",
    )
    assert len(n8n.received()) == FAILURE_THRESHOLD  # n8n was not called
    bypassed = ledger_job(services, answer["job_id"])
    assert (bypassed.state, bypassed.route, bypassed.route_reason) == (
        JobState.WAITING,
        "new",
        "n8n_circuit_open",
    )
    assert pending(services) == FAILURE_THRESHOLD + 1

    circuit = status(client)["n8n"]["circuit"]
    assert circuit["position"] == "open"
    assert circuit["consecutive_failures"] == FAILURE_THRESHOLD
    metrics = client.get("/metrics").text
    assert "ai_broker_n8n_circuit_open 1" in metrics.splitlines()

    # n8n is back and the cooldown is over (moved into the past): one probe gets through,
    # and its success closes the circuit.
    n8n.configure(chatwoot_url=chatwoot.url)
    stored = services.store.get_circuit(N8N_CIRCUIT)
    assert stored.opened_at is not None
    assert services.store.swap_circuit(
        N8N_CIRCUIT,
        expected_version=stored.version,
        circuit=replace(stored, opened_at=stored.opened_at - COOLDOWN_S - 1),
    )
    probe = post(client, customer_message(new_conversation(chatwoot)))
    assert probe["reason"] == "forwarded_to_n8n"
    assert len(n8n.received()) == FAILURE_THRESHOLD + 1
    assert services.store.get_circuit(N8N_CIRCUIT).position is CircuitPosition.CLOSED
    assert "ai_broker_n8n_circuit_open 0" in client.get("/metrics").text.splitlines()


def test_the_breaker_waits_out_its_configured_cooldown(
    make_services: Callable[..., Services],
) -> None:
    store = make_services(None).store
    now = [1_000_000.0]
    breaker = CircuitBreaker(store, "cooldown-test", cooldown_s=5.0, clock=lambda: now[0])
    assert breaker.cooldown_s == 5.0
    for _ in range(FAILURE_THRESHOLD):
        breaker.record(success=False)
    assert breaker.state().position is CircuitPosition.OPEN
    now[0] += 4.99
    assert not breaker.admit()
    now[0] += 0.01
    assert breaker.admit()  # 5 s, not the default 30 s
    assert breaker.state().position is CircuitPosition.HALF_OPEN
    assert not breaker.admit()  # the probe's slot is taken
    assert breaker.record(success=False).position is CircuitPosition.OPEN
    now[0] += 4.99
    assert not breaker.admit()  # a failed probe starts the same cooldown again
    now[0] += 0.01
    assert breaker.admit()
    assert breaker.record(success=True).position is CircuitPosition.CLOSED


def test_the_receiver_uses_the_configured_circuit_cooldown(
    make_services: Callable[..., Services], n8n: N8nSandbox, chatwoot: ChatwootSandbox
) -> None:
    """N8N_CIRCUIT_COOLDOWN_S reaches the receiver's breaker through build_services."""
    services = make_services(n8n, n8n_circuit_cooldown_s=5.0)
    assert services.forwarder is not None
    assert services.forwarder.breaker.cooldown_s == 5.0

    def opened_ago(seconds: float) -> None:
        stored = services.store.get_circuit(N8N_CIRCUIT)
        assert stored.position is CircuitPosition.OPEN
        assert services.store.swap_circuit(
            N8N_CIRCUIT,
            expected_version=stored.version,
            circuit=replace(stored, opened_at=time.time() - seconds),
        )

    with create_app(services=services).test_client() as client:
        n8n.configure(chatwoot_url=None, respond="when_done")  # n8n answers 500
        for _ in range(FAILURE_THRESHOLD):
            answer = post(client, customer_message(new_conversation(chatwoot)))
            assert answer["reason"] == "n8n_failed"
        n8n.configure(chatwoot_url=chatwoot.url)  # n8n is back

        opened_ago(1.0)  # inside the configured 5 s
        answer = post(client, customer_message(new_conversation(chatwoot)))
        assert answer["reason"] == "n8n_circuit_open"
        assert len(n8n.received()) == FAILURE_THRESHOLD

        opened_ago(6.0)  # past the configured 5 s, far inside the default 30 s
        probe = post(client, customer_message(new_conversation(chatwoot)))
        assert probe["reason"] == "forwarded_to_n8n"
        assert len(n8n.received()) == FAILURE_THRESHOLD + 1
        assert services.store.get_circuit(N8N_CIRCUIT).position is CircuitPosition.CLOSED


# -- shadow ---------------------------------------------------------------------------------
def n8n_echo(chatwoot: ChatwootSandbox, conversation_id: int) -> dict[str, Any]:
    """The webhook Chatwoot sends for the last message of the conversation (n8n's reply, or an
    agent's), as the receiver gets it: outgoing, its sender named."""
    posted = chatwoot.messages(conversation_id)[-1]
    echo = copy.deepcopy(chatwoot_fixture("message_created.outgoing_human_agent.json"))
    echo.update(id=posted["id"], content=posted["content"], created_at=None)
    echo["conversation"]["id"] = conversation_id
    echo["sender"] = {
        "id": posted["sender"]["id"],
        "name": posted["sender"]["name"],
        "type": "user",
    }
    return echo


@pytest.mark.parametrize("respond", ["immediately", "when_done"])
def test_shadow_comparison_holds_n8n_reply_not_its_acknowledgement(
    client: FlaskClient,
    services: Services,
    n8n: N8nSandbox,
    chatwoot: ChatwootSandbox,
    respond: str,
) -> None:
    n8n.configure(respond=respond)
    set_rollout(client, shadow=True)
    cid = new_conversation(chatwoot)
    payload = customer_message(cid, "What are today's fixed rates?")
    answer = post(client, payload)
    assert answer["reason"] == "forwarded_to_n8n"

    jobs = services.store.list_jobs(conversation_id=cid)
    kinds = sorted((j.kind.value, j.state.value) for j in jobs)
    assert kinds == [("reply", "forwarded"), ("shadow", "queued")]
    shadow = next(j for j in jobs if j.kind is JobKind.SHADOW)
    assert pending(services) == 1  # the shadow job, for a worker to write its reply
    (comparison,) = services.store.list_comparisons(conversation_id=cid)
    assert comparison.id == shadow.comparison_id
    assert comparison.inbound_message_id == payload["id"]
    assert comparison.customer_message == "What are today's fixed rates?"
    # Neither "Workflow was started" nor a body with the reply counts: only what n8n posts.
    assert comparison.n8n_reply is None

    n8n.drain()
    (received,) = n8n.received()
    answer = post(client, n8n_echo(chatwoot, cid))
    assert (answer["status"], answer["reason"]) == ("accepted", "n8n_reply")
    (paired,) = services.store.list_comparisons(conversation_id=cid)
    assert paired.n8n_reply == received["reply"]
    assert paired.n8n_source == "message_event"
    assert paired.shadow_reply is None and paired.similarity is None
    # A retried delivery creates neither a second shadow nor a second comparison.
    assert post(client, payload)["status"] == "duplicate"
    assert len(services.store.list_comparisons(conversation_id=cid)) == 1


def test_a_human_agent_in_an_n8n_conversation_takes_it_over(
    client: FlaskClient, services: Services, n8n: N8nSandbox, chatwoot: ChatwootSandbox
) -> None:
    set_rollout(client, shadow=True)
    cid = new_conversation(chatwoot)
    assert post(client, customer_message(cid))["reason"] == "forwarded_to_n8n"
    chatwoot.agent_reply(cid, "Hi, Priya here from the mortgage team. Let me take this.")
    answer = post(client, n8n_echo(chatwoot, cid))
    assert (answer["status"], answer["reason"]) == ("accepted", "human_reply")
    conversation = services.store.get_conversation(cid)
    assert conversation is not None and conversation.status.value == "human"
    (comparison,) = services.store.list_comparisons(conversation_id=cid)
    assert comparison.n8n_reply is None  # the agent's words are not n8n's


def test_n8n_reply_racing_a_rollout_change_is_still_n8ns(
    client: FlaskClient, services: Services, n8n: N8nSandbox, chatwoot: ChatwootSandbox
) -> None:
    """A receiver whose cached rollout already sends the conversation to the new pipeline
    (rolled forward, or not yet seeing a rollback) gets n8n's reply: n8n's sender says whose it
    is, so nobody is marked as a human takeover."""
    set_rollout(client, shadow=True)
    cid = new_conversation(chatwoot, new_pipeline=True)  # in the first 30 %
    assert post(client, customer_message(cid))["reason"] == "forwarded_to_n8n"
    n8n.drain()
    set_rollout(client, percentage=30)  # the conversation's bucket is the new pipeline's now
    answer = post(client, n8n_echo(chatwoot, cid))
    assert (answer["status"], answer["reason"]) == ("accepted", "n8n_reply")
    conversation = services.store.get_conversation(cid)
    assert conversation is None or conversation.status.value == "bot"


def test_the_watchdog_answers_what_n8n_took_and_never_answered(
    client: FlaskClient, services: Services, n8n: N8nSandbox, chatwoot: ChatwootSandbox
) -> None:
    """The workflow's Chatwoot node is disabled: n8n acknowledges every message and posts
    nothing. After N8N_REPLY_TIMEOUT_S the new pipeline answers the silent ones, once; the one
    n8n did answer stays n8n's."""
    set_rollout(client, shadow=True)
    answered_cid, silent_cid = new_conversation(chatwoot), new_conversation(chatwoot)
    assert post(client, customer_message(answered_cid))["reason"] == "forwarded_to_n8n"
    n8n.drain()
    assert post(client, n8n_echo(chatwoot, answered_cid))["reason"] == "n8n_reply"
    n8n.configure(post_replies=False)
    silent = post(client, customer_message(silent_cid))
    assert silent["reason"] == "forwarded_to_n8n"
    n8n.drain()
    assert services.forwarder is not None
    notifier = RecordingNotifier()
    watchdog = N8nWatchdog(
        services.store, services.queue, services.forwarder.breaker, notifier, silent_after_s=60
    )
    before = pending(services)
    assert watchdog.check(time.time() + 30) == []  # not silent long enough yet

    (requeued,) = watchdog.check(time.time() + 61)
    assert requeued.id == silent["job_id"]
    assert (requeued.state, requeued.route_reason) == (JobState.QUEUED, "n8n_silent")
    assert pending(services) == before + 1  # for a worker to prepare and answer
    assert services.forwarder.breaker.state().consecutive_failures == 1
    (comparison,) = services.store.list_comparisons(conversation_id=silent_cid)
    assert comparison.n8n_source == "silent"
    ((level, title, message),) = notifier.alerts
    assert (level, title) == ("warning", "n8n is not answering")
    assert message.startswith("1 message(s) forwarded to n8n got no reply within 60 s")
    assert watchdog.check(time.time() + 62) == []  # once
    assert ledger_job(services, requeued.id).state is JobState.QUEUED
    metrics = client.get("/metrics", headers=AUTH).text
    assert "ai_broker_n8n_silent_total 1" in metrics


def test_without_shadow_no_comparison_is_made(
    client: FlaskClient, services: Services, chatwoot: ChatwootSandbox
) -> None:
    cid = new_conversation(chatwoot)
    assert post(client, customer_message(cid))["reason"] == "forwarded_to_n8n"
    assert services.store.list_comparisons() == []
    assert [j.kind for j in services.store.list_jobs(conversation_id=cid)] == [JobKind.REPLY]


# -- rollback -------------------------------------------------------------------------------
def test_rollback_cancels_unsent_replies_and_hands_them_to_n8n(
    client: FlaskClient, services: Services, n8n: N8nSandbox, chatwoot: ChatwootSandbox
) -> None:
    set_rollout(client, percentage=100, shadow=True)
    payloads = [customer_message(new_conversation(chatwoot)) for _ in range(3)]
    job_ids = [post(client, p)["job_id"] for p in payloads]
    assert n8n.received() == []

    response = client.post("/api/admin/rollback", json={"reason": "replies look off"}, headers=AUTH)
    assert response.status_code == 200
    assert response.json["rollback"] == {
        "percentage": 0,
        "cancelled": 3,
        "forwarded_to_n8n": 3,
        "answered_by_new_pipeline": 0,
    }
    rollout = response.json["rollout"]
    assert (rollout["percentage"], rollout["n8n_enabled"], rollout["shadow"]) == (0, True, True)
    # n8n got exactly those messages, as Chatwoot sent them: the same bytes, with Chatwoot's
    # own signature headers, which still verify.
    received = sorted(n8n.received(), key=lambda r: r["message_id"])
    assert [r["payload"] for r in received] == sorted(payloads, key=lambda p: p["id"])
    for record in received:
        assert record["body"] == json.dumps(record["payload"], separators=(",", ":"))
        headers = {k.lower(): v for k, v in record["headers"].items()}
        assert headers["x-chatwoot-signature"] == "sha256=" + sign(
            SECRET, headers["x-chatwoot-timestamp"], record["body"].encode()
        )
    for job_id in job_ids:
        forwarded = ledger_job(services, job_id)
        assert (forwarded.state, forwarded.route, forwarded.route_reason) == (
            JobState.FORWARDED,
            "n8n",
            "rollback",
        )
    entry = services.store.audit_log()[0]
    assert (entry.action, entry.reason, entry.actor, entry.automatic) == (
        "rollback",
        "replies look off",
        "admin-api",
        False,
    )
    assert (entry.before["percentage"], entry.after["percentage"]) == (100, 0)

    # Pressing again is safe: nothing left to cancel, nothing sent twice.
    again = client.post("/api/admin/rollback", json={"reason": "again"}, headers=AUTH)
    assert again.status_code == 200
    assert again.json["rollback"]["cancelled"] == 0
    assert again.json["rollback"]["forwarded_to_n8n"] == 0
    assert len(n8n.received()) == 3
    # New messages now go to n8n.
    assert post(client, customer_message(new_conversation(chatwoot)))["route"] == "n8n"


def test_rollback_with_n8n_down_keeps_the_replies_for_the_new_pipeline(
    client: FlaskClient, services: Services, n8n: N8nSandbox, chatwoot: ChatwootSandbox
) -> None:
    set_rollout(client, percentage=100)
    job_ids = [post(client, customer_message(new_conversation(chatwoot)))["job_id"] for _ in "ab"]
    enqueued = pending(services)
    n8n.faults.set(error_rate=1.0)

    response = client.post("/api/admin/rollback", json={"reason": "drill"}, headers=AUTH)

    assert response.status_code == 200
    assert response.json["rollback"] == {
        "percentage": 0,
        "cancelled": 2,
        "forwarded_to_n8n": 0,
        "answered_by_new_pipeline": 2,
    }
    assert response.json["rollout"]["percentage"] == 0
    for job_id in job_ids:
        kept = ledger_job(services, job_id)
        assert (kept.state, kept.route, kept.route_reason) == (
            JobState.QUEUED,
            "new",
            "rollback_n8n_unavailable",
        )
    assert pending(services) == enqueued + 2  # handed to the workers again
    assert n8n.received() == []


def test_rollback_needs_a_reason(client: FlaskClient, services: Services) -> None:
    set_rollout(client, percentage=50)
    response = client.post("/api/admin/rollback", json={}, headers=AUTH)
    assert response.status_code == 422
    assert response.json["error"] == "invalid_rollback"
    assert services.rollout.current(fresh=True).percentage == 50


def test_rollback_without_n8n_is_refused(make_services: Callable[..., Services]) -> None:
    wired = make_services(None)
    client = create_app(services=wired).test_client()
    response = client.post("/api/admin/rollback", json={"reason": "x"}, headers=AUTH)
    assert response.status_code == 409
    assert response.json["error"] == "rollback_refused"
    assert "N8N_AI_BROKER_WEBHOOK_URL" in response.json["detail"]
    report = status(client)
    assert report["n8n"] == {"configured": False, "circuit": None}
    assert report["description"].startswith("No n8n workflow is configured")


# -- automatic rollback ---------------------------------------------------------------------
class RecordingNotifier:
    def __init__(self) -> None:
        self.alerts: list[tuple[str, str, str]] = []

    def alert(self, level: str, title: str, message: str) -> bool:
        self.alerts.append((level, title, message))
        return True


def finished_reply(services: Services, *, failed: bool) -> None:
    """A new-pipeline reply that finished just now, as a worker would have left it."""
    store, now = services.store, time.time()
    message_id = next(_message_ids)
    message = InboundMessage(message_id, 9_000_000 + message_id, 3, 7, "hi", None, None, None)
    recorded = store.record_inbound(message, delivery_id=None, now=now - 5)
    assert recorded.job is not None
    store.prepare_job(
        recorded.job.id, broker_id="sarah-wong", delay_s=0, escalation_reason=None, now=now - 5
    )
    store.claim_job(recorded.job.id, owner="w", lease_s=30, coalesce_window_s=0, now=now - 4)
    assert store.finish_job(
        recorded.job.id,
        owner="w",
        state=JobState.FAILED if failed else JobState.SENT,
        now=now,
        reply_message_id=None if failed else message_id,
    )


def test_guard_rolls_back_by_itself_audits_and_alerts(
    client: FlaskClient, services: Services, n8n: N8nSandbox, chatwoot: ChatwootSandbox
) -> None:
    set_rollout(client, percentage=100, guard={"min_sample": 10, "max_failure_rate": 0.2})
    payloads = [customer_message(new_conversation(chatwoot)) for _ in range(2)]
    unsent = [post(client, p)["job_id"] for p in payloads]
    notifier = RecordingNotifier()
    guard = RolloutGuard(services.store, services.rollout, notifier)
    for _ in range(5):
        finished_reply(services, failed=True)
    assert guard.check() is None  # 5 of 5 failed, but below the minimum sample
    for _ in range(20):
        finished_reply(services, failed=False)
    assert guard.check() is None  # 5 of 25 = 20 %: at the limit, not over it
    for _ in range(2):
        finished_reply(services, failed=True)

    result = guard.check()

    assert result is not None
    assert (result.cancelled, result.forwarded, result.kept) == (2, 2, 0)
    assert services.rollout.current(fresh=True).percentage == 0
    assert sorted(n8n_message_ids(n8n)) == sorted(p["id"] for p in payloads)
    assert {ledger_job(services, j).state for j in unsent} == {JobState.FORWARDED}
    entry = services.store.audit_log()[0]
    assert (entry.action, entry.actor, entry.automatic) == ("auto_rollback", GUARD_ACTOR, True)
    assert "failure rate 26% over 27 replies exceeds 20%" in entry.reason
    ((level, title, message),) = notifier.alerts
    assert level == "critical" and "rolled back" in title
    assert "Traffic was at 100 %" in message and "2 unsent replies were cancelled" in message
    # Rolled back: nothing left to guard, and no second alert.
    assert guard.check() is None
    assert len(notifier.alerts) == 1


def test_guard_leaves_a_disabled_guard_alone(client: FlaskClient, services: Services) -> None:
    set_rollout(client, percentage=50, guard={"enabled": False, "min_sample": 1})
    for _ in range(3):
        finished_reply(services, failed=True)
    notifier = RecordingNotifier()
    assert RolloutGuard(services.store, services.rollout, notifier).check() is None
    assert services.rollout.current(fresh=True).percentage == 50
    assert notifier.alerts == []


# -- queue pause and the status report ------------------------------------------------------
def test_pause_and_resume_show_in_migration_status(client: FlaskClient, services: Services) -> None:
    assert status(client)["rollout"]["queue_paused"] is False
    paused = client.post("/api/admin/queue/pause", headers=AUTH)
    assert paused.status_code == 200 and paused.json["rollout"]["queue_paused"] is True
    assert status(client)["rollout"]["queue_paused"] is True
    resumed = client.post("/api/admin/queue/resume", json={"reason": "all clear"}, headers=AUTH)
    assert resumed.status_code == 200 and resumed.json["rollout"]["queue_paused"] is False
    assert status(client)["rollout"]["queue_paused"] is False
    audit = services.store.audit_log()
    assert [(e.action, e.reason) for e in audit] == [("resume", "all clear"), ("pause", "paused")]


def test_migration_status_reports_state_description_and_advice(
    client: FlaskClient, services: Services, chatwoot: ChatwootSandbox
) -> None:
    report = status(client)
    assert report["rollout"]["percentage"] == 0
    assert report["description"] == (
        "n8n answers every conversation; the new pipeline answers none."
    )
    advice = "\n".join(report["recommendations"])
    assert "No worker is alive" in advice
    assert "Turn shadow mode on" in advice
    assert report["n8n"]["configured"] is True
    assert report["n8n"]["circuit"]["position"] == "closed"
    assert report["workers"] == []
    assert {"finished", "failure_rate", "backlog", "workers_alive"} <= set(report["health"])
    assert {"pending", "scheduled", "jobs"} <= set(report["queue"])

    services.rollout.change(RolloutChange(percentage=30), actor="t", reason="t")
    post(client, customer_message(new_conversation(chatwoot, new_pipeline=True)))
    report = status(client)
    assert (
        report["description"] == "Gradual rollout: the new pipeline answers 30 % of conversations."
    )
    assert report["queue"]["jobs"] == {"waiting": 1}
    assert "Turn shadow mode on" not in "\n".join(report["recommendations"])
