"""Atomicity of the Supabase schema's functions on the real PostgreSQL server, under real races.

Each worker is a thread with its own database connection calling the ai_broker_* functions in
autocommit, exactly as PostgREST does (one function call, one transaction), and a barrier
releases them together. A few races also run end to end, each worker's calls going through
PostgresStore -> supabase-py -> the PostgREST sandbox -> the same functions.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import psycopg
import pytest
from psycopg import sql

from app.domain.events import InboundMessage
from app.domain.jobs import JobState
from app.domain.personas import PERSONAS
from app.store.models import ClaimStatus, ConversationStatus, InboundStatus
from app.store.postgres import PostgresStore
from tests.support.postgres import SupabaseBed, shared_supabase_bed

T0 = 1_700_000_000.0
BROKER = "sarah-wong"
JOIN_TIMEOUT_S = 60.0
R = TypeVar("R")


# -- harness --------------------------------------------------------------------------------
@pytest.fixture
def bed(request: pytest.FixtureRequest) -> SupabaseBed:
    bed = shared_supabase_bed(request.config)
    bed.reset()
    return bed


@pytest.fixture
def store(bed: SupabaseBed) -> Iterator[PostgresStore]:
    """For setting the scene and reading the outcome (the races use their own connections)."""
    instance = bed.store()
    try:
        yield instance
    finally:
        instance.close()


def call(connection: psycopg.Connection[Any], function: str, *args: object) -> Any:
    """One ai_broker_* function call in its own transaction, as PostgREST makes it."""
    query = sql.SQL("SELECT {}({})").format(
        sql.Identifier(f"ai_broker_{function}"),
        sql.SQL(", ").join(sql.Placeholder() * len(args)),
    )
    row = connection.execute(query, args).fetchone()
    assert row is not None
    return row[0]


def race(dsn: str, workers: int, work: Callable[[int, psycopg.Connection[Any]], R]) -> list[R]:
    """Run work(i, connection) in `workers` threads, each on its own connection, all at once."""
    barrier = threading.Barrier(workers)
    results: dict[int, R] = {}
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            with psycopg.connect(dsn, autocommit=True) as connection:
                barrier.wait(timeout=JOIN_TIMEOUT_S)
                results[index] = work(index, connection)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=JOIN_TIMEOUT_S)
    assert not any(thread.is_alive() for thread in threads), "a worker is stuck (deadlock?)"
    assert not errors, errors
    return [results[i] for i in range(workers)]


def message(message_id: int, conversation_id: int) -> InboundMessage:
    return InboundMessage(
        message_id=message_id,
        conversation_id=conversation_id,
        account_id=1,
        inbox_id=1,
        content=f"message {message_id}",
        created_at=None,
        contact_id=None,
        contact_name=None,
    )


def new_jobs(store: PostgresStore, count: int, *, per_conversation: int = 1) -> list[str]:
    ids = []
    for n in range(1, count + 1):
        outcome = store.record_inbound(
            message(n, 1 + (n - 1) // per_conversation), delivery_id=f"d-{n}", now=T0
        )
        assert outcome.job is not None
        ids.append(outcome.job.id)
    return ids


def waiting_jobs(store: PostgresStore, count: int, *, per_conversation: int = 1) -> list[str]:
    ids = new_jobs(store, count, per_conversation=per_conversation)
    for job_id in ids:
        assert store.prepare_job(
            job_id, broker_id=BROKER, delay_s=0, escalation_reason=None, now=T0
        )
    return ids


def workload(store: PostgresStore, broker_id: str = BROKER) -> int:
    return next(b.current_workload for b in store.list_brokers() if b.id == broker_id)


# -- mark busy: hold_capacity ---------------------------------------------------------------
def test_fifty_parallel_holds_never_push_a_broker_past_capacity(
    bed: SupabaseBed, store: PostgresStore
) -> None:
    store.seed_brokers(PERSONAS, max_concurrent_chats=10)
    job_ids = new_jobs(store, 50)

    held = race(bed.dsn, 50, lambda i, db: call(db, "hold_capacity", job_ids[i], BROKER, T0))

    assert held.count(True) == 10
    assert workload(store) == 10
    holding = [j for j in store.list_jobs(limit=100) if j.capacity_held]
    assert len(holding) == 10
    assert {j.id for j in holding} == {job_ids[i] for i, ok in enumerate(held) if ok}


def test_fifty_parallel_holds_of_one_job_count_it_once(
    bed: SupabaseBed, store: PostgresStore
) -> None:
    store.seed_brokers(PERSONAS, max_concurrent_chats=10)
    (job_id,) = new_jobs(store, 1)

    held = race(bed.dsn, 50, lambda i, db: call(db, "hold_capacity", job_id, BROKER, T0))

    assert held == [True] * 50
    assert workload(store) == 1


# -- release capacity -----------------------------------------------------------------------
def test_concurrent_double_releases_never_go_below_zero(
    bed: SupabaseBed, store: PostgresStore
) -> None:
    store.seed_brokers(PERSONAS, max_concurrent_chats=10)
    job_ids = new_jobs(store, 10)
    for job_id in job_ids:
        assert store.hold_capacity(job_id, BROKER, now=T0)
    assert workload(store) == 10

    def release_twice_and_look(index: int, db: psycopg.Connection[Any]) -> int:
        # Every job is released by two workers, twice each: 40 releases for 10 slots.
        lowest = 10
        for _ in range(2):
            call(db, "release_capacity", job_ids[index % 10], T0)
            row = db.execute(
                "SELECT current_workload FROM ai_brokers WHERE id = %s", (BROKER,)
            ).fetchone()
            assert row is not None
            lowest = min(lowest, row[0])
        return lowest

    lowest = race(bed.dsn, 20, release_twice_and_look)

    assert min(lowest) >= 0
    assert workload(store) == 0
    assert not any(j.capacity_held for j in store.list_jobs(limit=100))
    assert {b.id: b.current_workload for b in store.list_brokers()} == {p.slug: 0 for p in PERSONAS}


# -- claim with a lease ---------------------------------------------------------------------
@pytest.mark.parametrize("workers", [2, 8])
def test_workers_racing_for_the_same_jobs_claim_each_once(
    bed: SupabaseBed, store: PostgresStore, workers: int
) -> None:
    job_ids = waiting_jobs(store, 30)  # one conversation each: no burst merging

    def claim_all(index: int, db: psycopg.Connection[Any]) -> list[str]:
        order = list(job_ids)
        random.Random(index).shuffle(order)
        claimed = []
        for job_id in order:
            claim = call(db, "claim_job", job_id, f"w{index}", 300.0, 0.0, T0)
            if claim["status"] == ClaimStatus.CLAIMED:
                claimed.append(job_id)
        return claimed

    claims = race(bed.dsn, workers, claim_all)

    claimed = [job_id for ids in claims for job_id in ids]
    assert sorted(claimed) == sorted(job_ids)  # every job, and none twice
    owners = {job_id: f"w{i}" for i, ids in enumerate(claims) for job_id in ids}
    for job_id in job_ids:
        job = store.get_job(job_id)
        assert job is not None
        assert job.state is JobState.RUNNING
        assert job.attempts == 1
        assert job.lease_owner == owners[job_id]


def test_bursts_claimed_by_racing_workers_answer_every_message_once(
    bed: SupabaseBed, store: PostgresStore
) -> None:
    # Six messages in each of five conversations: claims merge older messages into newer ones
    # while other workers claim those same messages.
    job_ids = waiting_jobs(store, 30, per_conversation=6)

    def claim_all(index: int, db: psycopg.Connection[Any]) -> list[list[str]]:
        order = list(job_ids)
        random.Random(100 + index).shuffle(order)
        batches = []
        for job_id in order:
            claim = call(db, "claim_job", job_id, f"w{index}", 300.0, 0.0, T0)
            if claim["status"] == ClaimStatus.CLAIMED:
                batches.append([row["id"] for row in claim["batch"]])
        return batches

    batches = [batch for worker in race(bed.dsn, 8, claim_all) for batch in worker]

    answered = [job_id for batch in batches for job_id in batch]
    assert sorted(answered) == sorted(job_ids)  # each message in exactly one reply
    states = Counter(j.state for j in store.list_jobs(limit=100))
    assert states[JobState.RUNNING] == len(batches)
    assert states[JobState.RUNNING] + states[JobState.MERGED] == 30


# -- inbound dedupe -------------------------------------------------------------------------
def test_the_same_messages_from_many_workers_make_one_job_each(
    bed: SupabaseBed, store: PostgresStore
) -> None:
    def record_all(index: int, db: psycopg.Connection[Any]) -> list[str]:
        return [
            call(db, "record_inbound", n, 1000 + n % 5, f"m{n}", f"w{index}-{n}", T0)["status"]
            for n in range(1, 41)
        ]

    outcomes = [status for worker in race(bed.dsn, 8, record_all) for status in worker]

    assert outcomes.count(InboundStatus.RECORDED) == 40
    assert outcomes.count(InboundStatus.DUPLICATE) == 7 * 40
    jobs = store.list_jobs(limit=100)
    assert sorted(j.inbound_message_id or 0 for j in jobs) == list(range(1, 41))


def test_one_delivery_from_many_workers_is_recorded_once(
    bed: SupabaseBed, store: PostgresStore
) -> None:
    outcomes = race(
        bed.dsn,
        20,
        lambda i, db: call(db, "record_inbound", 100 + i, 7, "hi", "same-delivery", T0)["reason"],
    )

    assert outcomes.count("customer_message") == 1
    assert outcomes.count("delivery_already_received") == 19


# -- reaper, send rate ----------------------------------------------------------------------
def test_concurrent_reapers_hand_each_lost_job_to_one_of_them(
    bed: SupabaseBed, store: PostgresStore
) -> None:
    lost = new_jobs(store, 40)  # queued at T0: stale at T0 + 100

    reaped = race(
        bed.dsn,
        4,
        lambda i, db: [row["job_id"] for row in call(db, "reap", T0 + 100, 60.0, 15)],
    )

    taken = [job_id for batch in reaped for job_id in batch]
    assert len(taken) == len(set(taken))
    assert set(taken) <= set(lost)
    assert len(taken) == min(40, 4 * 15)


def test_send_slots_are_not_oversold_under_contention(bed: SupabaseBed) -> None:
    # 10 per second: 10 slots in the window [T0, T0 + 1), whoever races for them.
    taken = race(bed.dsn, 30, lambda i, db: call(db, "acquire_send_slot", T0, 10))

    assert taken.count(True) == 10


# -- mixed load -----------------------------------------------------------------------------
def test_mixed_load_neither_deadlocks_nor_leaks_capacity(
    bed: SupabaseBed, store: PostgresStore
) -> None:
    store.seed_brokers(PERSONAS, max_concurrent_chats=8)
    brokers = [p.slug for p in PERSONAS]
    for conversation in range(1, 7):
        store.assign_broker(conversation, brokers[conversation % 5], now=T0)
    job_ids = waiting_jobs(store, 48, per_conversation=8)

    def churn(index: int, db: psycopg.Connection[Any]) -> int:
        rng = random.Random(index)
        for _ in range(40):
            job_id = rng.choice(job_ids)
            action = rng.random()
            if action < 0.35:
                call(db, "hold_capacity", job_id, rng.choice(brokers), T0)
            elif action < 0.55:
                call(db, "claim_job", job_id, f"w{index}", 300.0, rng.choice([0.0, 60.0]), T0)
            elif action < 0.75:
                call(db, "release_capacity", job_id, T0)
            elif action < 0.85:
                call(db, "finish_job", job_id, None, JobState.CANCELLED.value, T0)
            elif action < 0.93:
                status = rng.choice([ConversationStatus.HUMAN, ConversationStatus.HANDED_OFF])
                call(db, "set_conversation_status", rng.randint(1, 6), status.value, "x", T0)
            else:
                call(db, "cancel_job", job_id, "operator", T0)
        return index

    race(bed.dsn, 8, churn)

    jobs = store.list_jobs(limit=100)
    held = Counter(j.broker_id for j in jobs if j.capacity_held)
    assert {b.id: b.current_workload for b in store.list_brokers()} == {
        slug: held.get(slug, 0) for slug in brokers
    }
    assert not any(j.capacity_held and j.state.is_terminal for j in jobs)


# -- end to end: PostgresStore -> PostgREST sandbox -----------------------------------------
def test_fifty_parallel_holds_through_postgrest(bed: SupabaseBed, store: PostgresStore) -> None:
    store.seed_brokers(PERSONAS, max_concurrent_chats=10)
    job_ids = new_jobs(store, 50)
    stores = [bed.store() for _ in range(50)]
    barrier = threading.Barrier(50)

    def hold(index: int) -> bool:
        barrier.wait(timeout=JOIN_TIMEOUT_S)
        return stores[index].hold_capacity(job_ids[index], BROKER, now=T0)

    try:
        with ThreadPoolExecutor(max_workers=50) as pool:
            held = list(pool.map(hold, range(50), timeout=JOIN_TIMEOUT_S))
    finally:
        for each in stores:
            each.close()

    assert held.count(True) == 10
    assert workload(store) == 10


def test_eight_workers_racing_to_claim_through_postgrest(
    bed: SupabaseBed, store: PostgresStore
) -> None:
    job_ids = waiting_jobs(store, 20)
    stores = [bed.store() for _ in range(8)]
    barrier = threading.Barrier(8)

    def claim_all(index: int) -> list[str]:
        order = list(job_ids)
        random.Random(index).shuffle(order)
        barrier.wait(timeout=JOIN_TIMEOUT_S)
        return [
            job_id
            for job_id in order
            if stores[index]
            .claim_job(job_id, owner=f"w{index}", lease_s=300, coalesce_window_s=0, now=T0)
            .status
            is ClaimStatus.CLAIMED
        ]

    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            claims = list(pool.map(claim_all, range(8), timeout=JOIN_TIMEOUT_S))
    finally:
        for each in stores:
            each.close()

    claimed = [job_id for ids in claims for job_id in ids]
    assert sorted(claimed) == sorted(job_ids)
    assert {j.attempts for j in store.list_jobs(limit=100)} == {1}
