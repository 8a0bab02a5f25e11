"""The Redis intake buffer: the receiver's commitment when REDIS_URL is set.

Against real Redis: the test's own redis-server (tests/support/redis_server.py), which the tests
stop to show the receiver falls back to the ledger. The receiver runs in Flask's test client;
the worker's drainer is driven one pass at a time.
"""

from __future__ import annotations

import copy
import getpass
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient

from app.adapters.redis_intake import RedisIntake
from app.bootstrap import Services, build_services, prepare_store
from app.config import Settings
from app.domain.events import InboundMessage
from app.domain.intake_entry import BufferedInbound, PushOutcome
from app.domain.jobs import JobState
from app.domain.webhook_auth import sign
from app.sandbox.chatwoot import ChatwootSandbox
from app.sandbox.n8n import WEBHOOK_PATH, N8nSandbox
from app.services.intake import IntakeResult
from app.store.analytics import SqliteAnalytics
from app.web import create_app
from tasks.intake_drain import IntakeDrainer
from tests.support.fixtures import chatwoot_fixture
from tests.support.redis_server import RedisServer

SECRET = "intake-test-secret"
_ids = itertools.count(900_000)


@pytest.fixture
def client_redis(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def buffer(client_redis: redis.Redis) -> RedisIntake:
    return RedisIntake(client_redis, namespace="test")


def entry(message_id: int | None = None, delivery_id: str | None = None) -> BufferedInbound:
    message_id = message_id if message_id is not None else next(_ids)
    return BufferedInbound(
        message=InboundMessage(
            message_id=message_id,
            conversation_id=message_id % 1000 + 1,
            account_id=1,
            inbox_id=2,
            content=f"message {message_id}",
            created_at=None,
            contact_id=3,
            contact_name="Tan",
        ),
        delivery_id=delivery_id,
        received_at=1_700_000_000.5,
        payload=b'{"event":"message_created"}\n',
        headers={"X-Chatwoot-Signature": "sha256=abc"},
    )


# -- the buffer -------------------------------------------------------------------------------
def test_push_dedupes_on_message_id_and_delivery_id(buffer: RedisIntake) -> None:
    first = entry(delivery_id="d-1")
    assert buffer.push(first) is PushOutcome.ACCEPTED
    assert buffer.push(first) is PushOutcome.DELIVERY_ALREADY_RECEIVED
    same_message = BufferedInbound(first.message, "d-2", 1.0, b"{}")
    assert buffer.push(same_message) is PushOutcome.MESSAGE_ALREADY_RECEIVED
    assert buffer.push(entry(delivery_id="d-1")) is PushOutcome.DELIVERY_ALREADY_RECEIVED
    assert buffer.push(entry()) is PushOutcome.ACCEPTED
    assert buffer.depth() == 2


def test_dedupe_keys_expire_after_a_day(buffer: RedisIntake, client_redis: redis.Redis) -> None:
    buffer.push(entry(message_id=42, delivery_id="d-42"))
    ttls = [client_redis.ttl(key) for key in client_redis.keys("test:{intake}:seen:*")]
    assert len(ttls) == 2
    assert all(86_000 < ttl <= 86_400 for ttl in ttls)


def test_claim_returns_entries_oldest_first_and_holds_them_until_released(
    buffer: RedisIntake,
) -> None:
    pushed = [entry() for _ in range(5)]
    for item in pushed:
        buffer.push(item)
    claimed = buffer.claim("w1", limit=3, block_s=0.1)
    assert [c.entry for c in claimed] == pushed[:3]
    assert buffer.depth() == 2
    # Not released (a failure part-way): the claim still holds them, oldest first.
    assert [c.entry for c in buffer.held("w1")] == pushed[:3]
    buffer.release("w1")
    assert buffer.held("w1") == []
    rest = buffer.claim("w1", limit=10, block_s=0.1)
    assert [c.entry for c in rest] == pushed[3:]
    buffer.release("w1")
    assert buffer.claim("w1", limit=10, block_s=0.1) == []


def test_a_dead_consumers_claim_goes_back_but_a_live_ones_stays(
    buffer: RedisIntake, client_redis: redis.Redis
) -> None:
    pushed = [entry() for _ in range(4)]
    for item in pushed:
        buffer.push(item)
    for consumer in ("alive", "dead"):
        buffer.keep_alive(consumer)
    buffer.claim("alive", limit=1, block_s=0.1)
    buffer.claim("dead", limit=3, block_s=0.1)
    assert 0 < client_redis.ttl("test:{intake}:alive:dead") <= 10
    client_redis.delete("test:{intake}:alive:dead")  # what its expiry does after 10 s
    assert buffer.recover_orphans() == 3
    assert buffer.recover_orphans() == 0
    assert client_redis.smembers(buffer.consumers_key) == {b"alive"}
    taken = buffer.claim("other", limit=10, block_s=0.1)
    assert [c.entry for c in taken] == pushed[1:]
    assert [c.entry for c in buffer.held("alive")] == pushed[:1]


def test_racing_recoveries_never_copy_an_entry(
    buffer: RedisIntake, client_redis: redis.Redis
) -> None:
    for _ in range(300):
        buffer.push(entry())
    buffer.keep_alive("dead")
    buffer.claim("dead", limit=300, block_s=0.1)
    client_redis.delete("test:{intake}:alive:dead")
    recovered: list[int] = []
    threads = [
        threading.Thread(target=lambda: recovered.append(buffer.recover_orphans()))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(recovered) == 300
    raws = client_redis.lrange(buffer.pending_key, 0, -1)
    assert len(raws) == len(set(raws)) == 300


def test_retire_gives_the_claim_back(buffer: RedisIntake) -> None:
    buffer.push(entry())
    buffer.claim("leaving", limit=5, block_s=0.1)
    assert buffer.depth() == 0
    buffer.retire("leaving")
    assert buffer.depth() == 1


# -- the drainer ------------------------------------------------------------------------------
class Recorder:
    """The drainer's `admit`: records message ids, failing as told (an outage, or a bug for
    the messages in `broken`)."""

    def __init__(self, *, fail_times: int = 0, broken: Collection[int] = ()) -> None:
        self.recorded: list[int] = []
        self._fail_times = fail_times
        self._broken = set(broken)

    def __call__(self, item: BufferedInbound) -> IntakeResult:
        if item.message.message_id in self._broken:
            raise KeyError("a bug")
        if self._fail_times and len(self.recorded) == 2:
            self._fail_times -= 1
            from app.store.base import StoreError

            raise StoreError("store is not writable (disk I/O error)")
        self.recorded.append(item.message.message_id)
        return IntakeResult("accepted", "customer_message")


def test_drainer_keeps_its_claim_through_a_store_failure(buffer: RedisIntake) -> None:
    pushed = [entry() for _ in range(4)]
    for item in pushed:
        buffer.push(item)
    recorder = Recorder(fail_times=1)
    drainer = IntakeDrainer(buffer, recorder, consumer="w")
    with pytest.raises(Exception, match="not writable"):
        drainer.drain_once(block_s=0.1)
    assert buffer.depth() == 0  # still claimed, not lost
    assert drainer.drain_once(block_s=0.1) == 4
    ids = [p.message.message_id for p in pushed]
    # The first two were recorded twice: the ledger's dedupe absorbs that (test below).
    assert recorder.recorded == ids[:2] + ids
    assert buffer.held("w") == []


def test_drainer_parks_an_entry_it_cannot_record_and_goes_on(
    buffer: RedisIntake, client_redis: redis.Redis
) -> None:
    pushed = [entry() for _ in range(3)]
    for item in pushed:
        buffer.push(item)
    client_redis.lpush(buffer.pending_key, b"not json")
    recorder = Recorder(broken=[pushed[1].message.message_id])
    drained = IntakeDrainer(buffer, recorder, consumer="w").drain_once(block_s=0.1)
    assert drained == 4
    assert recorder.recorded == [pushed[0].message.message_id, pushed[2].message.message_id]
    assert buffer.rejected() == 2
    assert buffer.held("w") == []


def test_parked_entries_are_replayed_oldest_first(buffer: RedisIntake) -> None:
    pushed = [entry() for _ in range(3)]
    for item in pushed:
        buffer.push(item)
    drainer = IntakeDrainer(
        buffer, Recorder(broken=[p.message.message_id for p in pushed[:2]]), consumer="w"
    )
    drainer.drain_once(block_s=0.1)
    assert buffer.rejected() == 2
    assert buffer.replay_rejected() == 2
    assert buffer.rejected() == 0
    fixed = Recorder()
    IntakeDrainer(buffer, fixed, consumer="w").drain_once(block_s=0.1)
    assert fixed.recorded == [p.message.message_id for p in pushed[:2]]


def test_intake_replay_command(
    client_redis: redis.Redis,  # an empty Redis
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    real = RedisIntake(redis.Redis.from_url(redis_server.url))
    real.push(entry())
    real.claim("w", limit=1, block_s=0.1)
    [claimed] = real.held("w")
    real.reject("w", claimed)
    env = {"PATH": os.environ["PATH"], "DATA_DIR": str(tmp_path)}

    def replay(**extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "app.cli", "intake", "replay"],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    done = replay(REDIS_URL=redis_server.url)
    assert done.returncode == 0, done.stderr
    assert "1 parked message back in the intake buffer" in done.stdout
    assert "(1 waiting)" in done.stdout
    assert real.rejected() == 0
    # Audited as the console's put-back is: who ran it, what moved, why.
    analytics = SqliteAnalytics(tmp_path / "store.db")
    try:
        [action] = analytics.operator_actions()
    finally:
        analytics.close()
    assert (action.actor, action.action, action.target, action.reason) == (
        f"cli:{getpass.getuser()}",
        "replay_intake",
        "intake buffer (1 message)",
        "put back from the command line",
    )
    again = replay(REDIS_URL=redis_server.url)
    assert again.returncode == 0, again.stderr
    assert "nothing is parked" in again.stdout
    refused = replay()
    assert refused.returncode == 2
    assert "no REDIS_URL" in refused.stderr


def test_drainer_run_until_stops_and_gives_back(buffer: RedisIntake) -> None:
    stop = threading.Event()
    recorder = Recorder()
    drainer = IntakeDrainer(buffer, recorder, consumer="w")
    thread = threading.Thread(target=drainer.run_until, args=(stop,))
    thread.start()
    item = entry()
    buffer.push(item)
    deadline = time.monotonic() + 5
    while not recorder.recorded and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert recorder.recorded == [item.message.message_id]


# -- the receiver and the worker's drainer, wired -----------------------------------------------
@pytest.fixture
def services(
    tmp_path: Path, redis_server: RedisServer, client_redis: redis.Redis, n8n: N8nSandbox
) -> Iterator[Services]:
    settings = Settings(
        data_dir=tmp_path,
        chatwoot_webhook_secret=SECRET,
        redis_url=redis_server.url,
        n8n_webhook_url=f"{n8n.url}{WEBHOOK_PATH}",
        n8n_timeout_s=1.0,
        rollout_percentage=100,
    )
    wired = build_services(settings)
    prepare_store(wired.store)
    yield wired
    wired.store.close()


@pytest.fixture
def client(services: Services) -> Iterator[FlaskClient]:
    with create_app(services=services).test_client() as test_client:
        yield test_client


def customer_message(conversation_id: int) -> dict[str, Any]:
    payload = copy.deepcopy(chatwoot_fixture("message_created.incoming_contact.json"))
    message_id = next(_ids)
    payload["id"] = message_id
    payload["conversation"]["id"] = conversation_id
    payload["conversation"]["messages"][0].update(id=message_id, conversation_id=conversation_id)
    return payload


def post(client: FlaskClient, payload: dict[str, Any], delivery: str) -> Any:
    body = json.dumps(payload, separators=(",", ":")).encode()
    timestamp = str(int(time.time()))
    response = client.post(
        "/webhooks/chatwoot",
        data=body,
        headers={
            "Content-Type": "application/json",
            "X-Chatwoot-Timestamp": timestamp,
            "X-Chatwoot-Signature": "sha256=" + sign(SECRET, timestamp, body),
            "X-Chatwoot-Delivery": delivery,
        },
    )
    assert response.status_code == 200, response.json
    return response.json


def drain(services: Services) -> int:
    assert services.intake_buffer is not None
    drainer = IntakeDrainer(services.intake_buffer, services.intake.admit_buffered, consumer="t")
    return drainer.drain_once(block_s=0.1)


def test_receiver_buffers_and_the_drainer_records_and_enqueues(
    client: FlaskClient, services: Services
) -> None:
    payload = customer_message(501)
    before = time.time()
    answer = post(client, payload, "dlv-1")
    assert answer == {"status": "accepted", "reason": "customer_message", "route": "new"}
    assert services.store.list_jobs(conversation_id=501) == []
    assert services.queue.depth() == {
        "pending": 0,
        "scheduled": 0,
        "intake": 1,
        "intake_parked": 0,
    }

    assert post(client, payload, "dlv-1")["status"] == "duplicate"
    assert post(client, payload, "dlv-2") == {
        "status": "duplicate",
        "reason": "message_already_received",
    }

    assert drain(services) == 1
    [job] = services.store.list_jobs(conversation_id=501)
    assert job.state is JobState.WAITING  # admitted: assigned, capacity held, scheduled
    assert job.inbound_message_id == payload["id"]
    assert job.delivery_id == "dlv-1"
    # The ledger keeps the receiver's time, so latency figures include the buffer.
    assert before <= job.received_at <= time.time()
    assert services.queue.depth() == {
        "pending": 1,
        "scheduled": 0,
        "intake": 0,
        "intake_parked": 0,
    }


def test_an_entry_drained_twice_makes_one_job(client: FlaskClient, services: Services) -> None:
    payload = customer_message(502)
    post(client, payload, "dlv-3")
    assert services.intake_buffer is not None
    [claimed] = services.intake_buffer.claim("crashed", limit=1, block_s=0.1)
    assert claimed.entry is not None
    services.intake.admit_buffered(claimed.entry)  # recorded, then the worker died
    services.intake_buffer.retire("crashed")  # what recovery does with its claim
    assert drain(services) == 1
    assert len(services.store.list_jobs(conversation_id=502)) == 1
    assert services.queue.depth()["pending"] == 1


def test_without_redis_the_receiver_records_in_the_ledger(
    client: FlaskClient, services: Services, redis_server: RedisServer
) -> None:
    redis_server.stop()
    try:
        answer = post(client, customer_message(503), "dlv-4")
    finally:
        redis_server.start()
    assert answer["status"] == "accepted"
    assert answer["job_id"]
    [job] = services.store.list_jobs(conversation_id=503)
    assert job.id == answer["job_id"]
    assert job.state is JobState.WAITING


def test_a_message_buffered_before_a_rollback_goes_to_n8n(
    client: FlaskClient, services: Services, n8n: N8nSandbox, chatwoot: ChatwootSandbox
) -> None:
    _, conversation = chatwoot.create_lead_conversation("Tan", "tan@example.com", "+6591234567")
    conversation_id = int(conversation["id"])
    payload = customer_message(conversation_id)
    assert post(client, payload, "dlv-5")["route"] == "new"
    services.rollout.rollback(actor="test", reason="rollback drill")
    assert drain(services) == 1
    [job] = services.store.list_jobs(conversation_id=conversation_id)
    assert job.state is JobState.FORWARDED
    assert [r["message_id"] for r in n8n.received()] == [payload["id"]]


# -- parked entries, for the console ------------------------------------------------------------
def test_parked_lists_the_oldest_first_unreadable_ones_included_and_moves_nothing(
    buffer: RedisIntake, client_redis: redis.Redis
) -> None:
    assert buffer.parked() == []
    pushed = [entry() for _ in range(3)]
    for item in pushed:
        buffer.push(item)
    IntakeDrainer(
        buffer, Recorder(broken=[p.message.message_id for p in pushed]), consumer="w"
    ).drain_once(block_s=0.1)
    client_redis.lpush(buffer.rejected_key, b'{"v":2}\n{}')  # a newer receiver's entry
    listed = buffer.parked()
    assert [p.entry for p in listed[:3]] == pushed
    assert listed[3].entry is None
    assert listed[3].error is not None and "version 2" in listed[3].error
    assert listed[3].raw == b'{"v":2}\n{}'
    assert [p.entry for p in buffer.parked(limit=2)] == pushed[:2]
    assert buffer.parked(limit=0) == []
    assert (buffer.rejected(), buffer.depth()) == (4, 0)
    assert buffer.replay_rejected() == 4
    assert buffer.parked() == []
