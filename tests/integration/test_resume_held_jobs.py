"""Resuming a paused queue hands every held job back to the workers, on every store.

While paused, workers drop their tasks unrun and the jobs wait in the ledger; resume reads them
all back. Over Supabase's REST API a plain table read would stop at PostgREST's max-rows (1,000,
which the sandbox enforces as Supabase does), so 1,500 held jobs must all come back.
"""

from __future__ import annotations

from app.domain.rollout import RolloutState
from app.services.rollout import RolloutService
from app.store.base import Store
from tests.integration import test_store_contract as contract
from tests.integration.test_store_contract import T0, new_job, waiting_job

store = contract.store

QUEUED = 900
WAITING = 600


class RecordingQueue:
    def __init__(self) -> None:
        self.prepared: list[str] = []
        self.responded: list[tuple[str, float | None]] = []

    def enqueue_prepare(self, job_id: str, *, at: float | None = None) -> None:
        self.prepared.append(job_id)

    def enqueue_respond(self, job_id: str, *, at: float | None = None) -> None:
        self.responded.append((job_id, at))


def test_resume_enqueues_all_1500_held_jobs(store: Store) -> None:
    contract.seed(store)
    queue = RecordingQueue()
    rollout = RolloutService(
        store, initial=RolloutState(), forwarder=None, queue=queue, clock=lambda: T0 + 1
    )
    rollout.set_paused(True, actor="ops", reason="incident")
    queued = {new_job(store, 10_000 + i, 10_000 + i).id for i in range(QUEUED)}
    waiting = {
        waiting_job(store, 20_000 + i, 20_000 + i, delay_s=i % 2 * 60.0).id for i in range(WAITING)
    }

    rollout.set_paused(False, actor="ops", reason="all clear")

    assert set(queue.prepared) == queued and len(queue.prepared) == QUEUED
    assert {job_id for job_id, _ in queue.responded} == waiting
    assert len(queue.responded) == WAITING
    # Due now: at once; due later: scheduled for when the delay is over.
    assert sorted({at for _, at in queue.responded}, key=str) == [T0 + 60.0, None]
