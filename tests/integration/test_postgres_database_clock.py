"""On PostgreSQL, leases, reaping and send windows read the database's clock (migration 0005).

Each test runs a host whose clock is an hour off against one whose clock is right, on both
transports (psycopg and supabase-py through the PostgREST sandbox), and the same steps with
the caller's clock as the control: there the skewed host breaks a live lease or sends twice in
one window, which is what the database's clock prevents. The local PostgreSQL shares this
machine's clock, so "the right time" is `time.time()`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from app.domain.jobs import JobState
from app.domain.personas import PERSONAS
from app.domain.rollout import RolloutState
from app.services.pipeline import SKEWED_CLOCK_RETRY_S, PipelineSettings, ReplyPipeline
from app.services.rollout import RolloutService
from app.store.models import ClaimStatus, SendGate
from app.store.postgres import LeaseClock, PostgresStore, _send_window
from tests.integration.test_store_contract import running_job, waiting_job
from tests.support.postgres import shared_supabase_bed

HOUR = 3600.0
LEASE_S = 30.0


@pytest.fixture(params=["postgres", "supabase"])
def stores(request: pytest.FixtureRequest) -> Iterator[dict[LeaseClock, PostgresStore]]:
    """The same database through one transport, once per lease clock."""
    bed = shared_supabase_bed(request.config)
    bed.reset()
    made = {
        clock: bed.direct_store(lease_clock=clock)
        if request.param == "postgres"
        else bed.store(lease_clock=clock)
        for clock in LeaseClock
    }
    made[LeaseClock.CALLER].seed_brokers(PERSONAS, max_concurrent_chats=100)
    try:
        yield made
    finally:
        for store in made.values():
            store.close()


def test_a_host_an_hour_ahead_does_not_reap_a_live_lease(
    stores: dict[LeaseClock, PostgresStore],
) -> None:
    for clock, message_id in ((LeaseClock.DATABASE, 1), (LeaseClock.CALLER, 2)):
        store = stores[clock]
        job = running_job(store, message_id, message_id, now=time.time(), lease_s=LEASE_S)
        reaped = [r.job_id for r in store.reap(now=time.time() + HOUR, stale_after_s=60.0)]
        if clock is LeaseClock.DATABASE:
            assert reaped == []
            assert store.get_job(job.id).lease_owner == "w1"  # type: ignore[union-attr]
        else:
            assert job.id in reaped  # the control: on its own clock, the lease looks expired


def test_a_host_an_hour_behind_claims_a_due_job_and_leases_it_on_the_database_clock(
    stores: dict[LeaseClock, PostgresStore],
) -> None:
    store = stores[LeaseClock.DATABASE]
    job = waiting_job(store, 1, 1, now=time.time())
    before = time.time()
    claim = store.claim_job(
        job.id, owner="behind", lease_s=LEASE_S, coalesce_window_s=0.0, now=before - HOUR
    )
    assert claim.status is ClaimStatus.CLAIMED
    assert claim.job is not None and claim.job.lease_expires_at is not None
    assert before + LEASE_S <= claim.job.lease_expires_at <= time.time() + LEASE_S

    assert store.renew_lease(job.id, owner="behind", lease_s=2 * LEASE_S, now=before - HOUR)
    renewed = store.get_job(job.id)
    assert renewed is not None and renewed.lease_expires_at is not None
    assert renewed.lease_expires_at >= before + 2 * LEASE_S

    control = stores[LeaseClock.CALLER]
    late = waiting_job(control, 2, 2, now=time.time())
    not_due = control.claim_job(
        late.id, owner="behind", lease_s=LEASE_S, coalesce_window_s=0.0, now=time.time() - HOUR
    )
    assert not_due.status is ClaimStatus.NOT_CLAIMABLE


def _early_in_a_second() -> None:
    """Sleep to the start of the next whole second, so two calls share one 1 s window."""
    time.sleep(1.0 - time.time() % 1.0 + 0.05)


def test_hosts_an_hour_apart_share_one_send_window(
    stores: dict[LeaseClock, PostgresStore],
) -> None:
    store = stores[LeaseClock.DATABASE]
    _early_in_a_second()
    assert store.acquire_send_slot(1.0, now=time.time() + HOUR) == 0.0
    wait_s = store.acquire_send_slot(1.0, now=time.time() - HOUR)
    assert 0.0 < wait_s <= 1.0

    control = stores[LeaseClock.CALLER]
    _early_in_a_second()
    assert control.acquire_send_slot(1.0, now=time.time() + HOUR) == 0.0
    assert control.acquire_send_slot(1.0, now=time.time() - HOUR) == 0.0  # two sends, one second


def test_start_send_takes_its_slot_on_the_database_clock(
    stores: dict[LeaseClock, PostgresStore],
) -> None:
    store = stores[LeaseClock.DATABASE]
    first = running_job(store, 1, 1, now=time.time(), owner="ahead")
    second = running_job(store, 2, 2, now=time.time(), owner="behind")
    _early_in_a_second()
    go = store.start_send(first.id, owner="ahead", rate_per_s=1.0, now=time.time() + HOUR)
    assert go.gate is SendGate.GO
    assert go.job is not None and go.job.id == first.id
    stamped = store.get_job(first.id)
    assert stamped is not None and stamped.send_started_at is not None
    assert abs(stamped.send_started_at - time.time()) < 5.0  # the database's time, not the host's

    wait = store.start_send(second.id, owner="behind", rate_per_s=1.0, now=time.time() - HOUR)
    assert wait.gate is SendGate.WAIT
    assert 0.0 < wait.wait_s <= 1.0


@pytest.mark.parametrize("rate_per_s", [0.2, 0.3, 1.0, 2.5, 7.0, 1000.0])
def test_the_database_send_window_holds_its_moment(
    request: pytest.FixtureRequest, rate_per_s: float
) -> None:
    """The window's arithmetic in SQL: the window holds `now`, allows the caller's number of
    sends, and the wait ends with it. (Float division there and Python's exact modulo may put
    a moment right at an edge into neighbouring windows; each is consistent on its own.)"""
    bed = shared_supabase_bed(request.config)
    width = max(1.0, 1.0 / rate_per_s)
    for now in (1_700_000_000.0, 1_700_000_000.999, 1_796_345_295.106413, 1_800_000_003.5):
        window_start, allowed, wait_s = bed.admin.execute(
            "SELECT window_start, allowed, wait_s FROM ai_broker_send_window(%s, %s)",
            (rate_per_s, now),
        ).fetchone()
        assert window_start - 1e-6 <= now < window_start + width + 1e-6
        assert allowed == _send_window(rate_per_s, now)[1]
        assert wait_s == pytest.approx(max(0.001, window_start + width - now), abs=1e-9)


class RecordingQueue:
    def __init__(self) -> None:
        self.respond: list[tuple[str, float | None]] = []

    def enqueue_prepare(self, job_id: str, *, at: float | None = None) -> None:
        raise AssertionError("not expected")

    def enqueue_respond(self, job_id: str, *, at: float | None = None) -> None:
        self.respond.append((job_id, at))


@pytest.mark.parametrize("ahead_s", [0.0, 30.0])
def test_a_worker_ahead_of_the_database_comes_back_later_not_at_once(
    stores: dict[LeaseClock, PostgresStore], ahead_s: float
) -> None:
    """Its own clock says the reply is due; the database's says not yet. Re-enqueued at the due
    time (already past here), the task would run again at once, over and over."""
    store = stores[LeaseClock.DATABASE]
    job = waiting_job(store, 1, 1, now=time.time() + ahead_s, delay_s=5.0)
    assert job.due_at is not None
    queue = RecordingQueue()
    host_now = job.due_at + 0.1 if ahead_s else time.time()
    pipeline = ReplyPipeline(
        store=store,
        chatwoot=None,  # type: ignore[arg-type]  # never reached: the claim says not due
        generator=None,  # type: ignore[arg-type]
        queue=queue,
        rollout=RolloutService(store, initial=RolloutState(), forwarder=None, queue=queue),
        settings=PipelineSettings(),
        worker_id="ahead:1:abc",
        clock=lambda: host_now,
    )
    pipeline.respond(job.id)
    [(job_id, at)] = queue.respond
    assert job_id == job.id and at is not None
    if ahead_s:
        assert at == pytest.approx(host_now + SKEWED_CLOCK_RETRY_S, abs=1e-6)
    else:
        assert at == job.due_at  # not due on either clock: back at the due time
    assert store.get_job(job.id).state is JobState.WAITING  # type: ignore[union-attr]
