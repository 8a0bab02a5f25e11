"""Cross-process atomicity of the SQLite store: real processes, one database file.

Each child process opens its own SqliteStore on the same file (as web and worker processes
do), waits on a barrier so all of them hit the database at once, and reports what it saw.
"""

from __future__ import annotations

import multiprocessing
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.domain.events import InboundMessage
from app.domain.jobs import JobState
from app.domain.personas import PERSONAS
from app.store.models import ClaimStatus, InboundStatus
from app.store.sqlite import SqliteStore

T0 = 1_700_000_000.0
BROKER = "sarah-wong"
# spawn: children start clean, without a copy of the parent's SQLite connections.
CTX = multiprocessing.get_context("spawn")
JOIN_TIMEOUT_S = 60.0


def make_message(message_id: int, conversation_id: int) -> InboundMessage:
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


# -- child processes (module level, so spawn can import them) -------------------------------
def _hold_worker(path: str, barrier: Any, results: Any, job_ids: list[str]) -> None:
    store = SqliteStore(Path(path))
    try:
        barrier.wait()
        held = [store.hold_capacity(job_id, BROKER, now=T0) for job_id in job_ids]
        results.put(held)
    finally:
        store.close()


def _release_worker(path: str, barrier: Any, results: Any, job_ids: list[str]) -> None:
    store = SqliteStore(Path(path))
    try:
        barrier.wait()
        lowest = None
        for job_id in job_ids:
            store.release_capacity(job_id, now=T0)
            load = next(b.current_workload for b in store.list_brokers() if b.id == BROKER)
            lowest = load if lowest is None else min(lowest, load)
        results.put(lowest)
    finally:
        store.close()


def _claim_worker(path: str, barrier: Any, results: Any, owner: str, job_ids: list[str]) -> None:
    store = SqliteStore(Path(path))
    try:
        order = list(job_ids)
        random.Random(owner).shuffle(order)
        barrier.wait()
        claimed = []
        for job_id in order:
            claim = store.claim_job(job_id, owner=owner, lease_s=300, coalesce_window_s=0, now=T0)
            if claim.status is ClaimStatus.CLAIMED:
                claimed.append(job_id)
        results.put((owner, claimed))
    finally:
        store.close()


def _inbound_worker(path: str, barrier: Any, results: Any, worker: int, count: int) -> None:
    store = SqliteStore(Path(path))
    try:
        barrier.wait()
        outcomes = []
        for message_id in range(1, count + 1):
            outcome = store.record_inbound(
                make_message(message_id, 1000 + message_id),
                delivery_id=f"p{worker}-{message_id}",
                now=T0,
            )
            outcomes.append((outcome.status.value, outcome.reason))
        results.put(outcomes)
    finally:
        store.close()


def run_processes(target: Callable[..., None], arg_sets: list[tuple[Any, ...]]) -> list[Any]:
    """Start one process per argument tuple, released together; return their results."""
    barrier = CTX.Barrier(len(arg_sets))
    results = CTX.Queue()
    processes = [
        CTX.Process(target=target, args=(args[0], barrier, results, *args[1:])) for args in arg_sets
    ]
    for process in processes:
        process.start()
    try:
        collected = [results.get(timeout=JOIN_TIMEOUT_S) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=JOIN_TIMEOUT_S)
            if process.is_alive():
                process.kill()
    assert [process.exitcode for process in processes] == [0] * len(processes)
    return collected


# -- fixtures -------------------------------------------------------------------------------
@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[SqliteStore]:
    instance = SqliteStore(db_path)
    instance.init_schema()
    try:
        yield instance
    finally:
        instance.close()


def new_jobs(store: SqliteStore, count: int) -> list[str]:
    ids = []
    for n in range(1, count + 1):
        outcome = store.record_inbound(make_message(n, n), delivery_id=f"d-{n}", now=T0)
        assert outcome.job is not None
        ids.append(outcome.job.id)
    return ids


def workload(store: SqliteStore) -> int:
    return next(b.current_workload for b in store.list_brokers() if b.id == BROKER)


# -- tests ----------------------------------------------------------------------------------
def test_capacity_is_never_oversold_or_released_twice(store: SqliteStore, db_path: Path) -> None:
    assert store.seed_brokers(PERSONAS, max_concurrent_chats=50) == 5
    job_ids = new_jobs(store, 160)
    chunks = [job_ids[i * 20 : (i + 1) * 20] for i in range(8)]

    held = run_processes(_hold_worker, [(str(db_path), chunk) for chunk in chunks])

    assert sum(sum(flags) for flags in held) == 50
    assert workload(store) == 50
    holding = [j.id for j in store.list_jobs(limit=1000) if j.capacity_held]
    assert len(holding) == 50

    # Four processes release every job, each its own quarter twice and its neighbour's
    # quarter once more: every held job is released two to three times, concurrently.
    quarters = [job_ids[i * 40 : (i + 1) * 40] for i in range(4)]
    release_sets = [
        (str(db_path), quarters[i] + quarters[i] + quarters[(i + 1) % 4]) for i in range(4)
    ]
    lowest = run_processes(_release_worker, release_sets)

    assert min(lowest) >= 0
    assert workload(store) == 0
    assert not any(j.capacity_held for j in store.list_jobs(limit=1000))
    # The other brokers were never touched.
    assert {b.id: b.current_workload for b in store.list_brokers()} == {p.slug: 0 for p in PERSONAS}


def test_each_waiting_job_is_claimed_exactly_once(store: SqliteStore, db_path: Path) -> None:
    job_ids = new_jobs(store, 30)  # one conversation each: no burst merging
    for job_id in job_ids:
        assert store.prepare_job(
            job_id, broker_id=BROKER, delay_s=0, escalation_reason=None, now=T0
        )

    claims = run_processes(_claim_worker, [(str(db_path), f"w{i}", job_ids) for i in range(4)])

    claimed = [job_id for _, ids in claims for job_id in ids]
    assert len(claimed) == 30
    assert sorted(claimed) == sorted(job_ids)
    owners = {job_id: owner for owner, ids in claims for job_id in ids}
    for job_id in job_ids:
        job = store.get_job(job_id)
        assert job is not None
        assert job.state is JobState.RUNNING
        assert job.attempts == 1
        assert job.lease_owner == owners[job_id]


def test_same_messages_from_many_processes_make_one_job_each(
    store: SqliteStore, db_path: Path
) -> None:
    outcomes = run_processes(_inbound_worker, [(str(db_path), i, 50) for i in range(4)])

    flat = [outcome for worker in outcomes for outcome in worker]
    assert len(flat) == 200
    recorded = [o for o in flat if o[0] == InboundStatus.RECORDED.value]
    assert len(recorded) == 50
    assert flat.count((InboundStatus.DUPLICATE.value, "message_already_received")) == 150
    assert store.job_state_counts() == {"queued": 50}
    jobs = store.list_jobs(limit=1000)
    assert sorted(j.inbound_message_id or 0 for j in jobs) == list(range(1, 51))
