"""Migration control: the live rollout state, changes with an audit trail, and rollback.

Every receiver reads the state through a one-second cache, so a change reaches every process
within about a second without a restart. When the cache expires, one thread reads the state again
while the others go on with the state it replaces: with Supabase that read is an HTTP call, and
all of a process's threads making it at once put a round trip into a burst of acknowledgements
every second. Changes are compare-and-set with the audit row in the same transaction.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from app.domain.jobs import JobState, ReplyJob
from app.domain.rollout import (
    RolloutChange,
    RolloutError,
    RolloutState,
    Route,
    apply_change,
)
from app.ports import JobQueue
from app.services.forwarding import N8nForwarder
from app.store.base import Store, StoreError

log = logging.getLogger(__name__)

CACHE_TTL_S = 1.0
# How long the other threads may go on with an expired state while one thread reads it again.
# Past this every caller reads (and, with the store down, fails) as if there were no cache.
STALE_WHILE_READING_S = 5.0
_CAS_ATTEMPTS = 10
ROLLBACK_FORWARD_THREADS = 8


@dataclass(frozen=True)
class RollbackResult:
    state: RolloutState
    cancelled: int
    forwarded: int
    kept: int  # n8n could not take them: the new pipeline still answers these

    def to_json(self) -> dict[str, object]:
        return {
            "percentage": self.state.percentage,
            "cancelled": self.cancelled,
            "forwarded_to_n8n": self.forwarded,
            "answered_by_new_pipeline": self.kept,
        }


class RolloutService:
    def __init__(
        self,
        store: Store,
        *,
        initial: RolloutState,
        forwarder: N8nForwarder | None,
        queue: JobQueue,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._initial = initial
        self._forwarder = forwarder
        self._queue = queue
        self._clock = clock
        self._cached: tuple[RolloutState, float] | None = None  # the state, when it was read
        self._reading = threading.Lock()

    @property
    def n8n_configured(self) -> bool:
        return self._forwarder is not None

    def current(self, *, fresh: bool = False) -> RolloutState:
        now = time.monotonic()
        cached = self._cached
        if cached is None or fresh:
            return self._read(now)
        state, read_at = cached
        age = now - read_at
        if age < CACHE_TTL_S:
            return state
        if age >= STALE_WHILE_READING_S:
            return self._read(now)
        if not self._reading.acquire(blocking=False):
            return state  # another thread is reading it again
        try:
            return self._read(now)
        finally:
            self._reading.release()

    def _read(self, now: float) -> RolloutState:
        state = self._store.get_rollout(initial=self._initial)
        self._cached = (state, now)
        return state

    def route_for(self, conversation_id: int) -> Route:
        return self.current().route_for(conversation_id, n8n_configured=self.n8n_configured)

    def change(self, change: RolloutChange, *, actor: str, reason: str) -> RolloutState:
        """Raises RolloutError when the change breaks a rule."""
        return self._save(
            lambda state: apply_change(state, change),
            actor=actor,
            action="set_rollout",
            reason=reason,
        )

    def set_paused(self, paused: bool, *, actor: str, reason: str) -> RolloutState:
        state = self._save(
            lambda state: replace(state, queue_paused=paused),
            actor=actor,
            action="pause" if paused else "resume",
            reason=reason,
        )
        if not paused:
            self._resume_held_jobs()
        return state

    def _resume_held_jobs(self) -> None:
        """Paused workers dropped their tasks; hand the held jobs back to the queue now rather
        than when the reaper next finds them."""
        held = self._store.list_jobs(states=(JobState.QUEUED, JobState.WAITING), limit=100_000)
        now = self._clock()
        for job in held:
            if job.state is JobState.QUEUED:
                self._queue.enqueue_prepare(job.id)
            else:
                due = job.due_at if job.due_at is not None and job.due_at > now else None
                self._queue.enqueue_respond(job.id, at=due)
        log.info("resumed: %d held job(s) enqueued again", len(held))

    def rollback(self, *, actor: str, reason: str, automatic: bool = False) -> RollbackResult:
        """Percentage to 0 at once; unsent new-pipeline replies go to n8n instead.

        Safe to repeat and safe under traffic: a job is either cancelled before it stamps its
        send (then n8n gets the message) or sends (then it is not cancelled); a message n8n
        cannot take goes back to the new pipeline, so each message is answered once."""
        if self._forwarder is None:
            raise RolloutError(
                "there is no n8n workflow to roll back to: set N8N_AI_BROKER_WEBHOOK_URL"
            )
        state = self._save(
            lambda current: replace(current, percentage=0, n8n_enabled=True),
            actor=actor,
            action="auto_rollback" if automatic else "rollback",
            reason=reason,
            automatic=automatic,
        )
        cancelled = self._store.cancel_unsent_replies(
            reason=f"rollback: {reason}", now=self._clock()
        )
        with ThreadPoolExecutor(ROLLBACK_FORWARD_THREADS) as pool:
            outcomes = list(pool.map(self._forward_cancelled, cancelled))
        forwarded = sum(outcomes)
        result = RollbackResult(state, len(cancelled), forwarded, len(cancelled) - forwarded)
        log.warning(
            "rollback by %s (%s): %d unsent replies cancelled, %d handed to n8n, %d kept",
            actor,
            reason,
            result.cancelled,
            result.forwarded,
            result.kept,
        )
        return result

    def _forward_cancelled(self, job: ReplyJob) -> bool:
        assert self._forwarder is not None
        handover = None
        if job.inbound_payload:
            handover = self._forwarder.hand_over(
                job.inbound_payload.encode(), job.inbound_headers or {}
            )
        accepted = handover is not None and handover.accepted
        now = self._clock()
        reason = "rollback" if accepted else "rollback_n8n_unavailable"
        requeued = self._store.forward_outcome(job.id, accepted=accepted, reason=reason, now=now)
        if not accepted and requeued is not None:
            self._queue.enqueue_prepare(requeued.id)
        return accepted

    def _save(
        self,
        mutate: Callable[[RolloutState], RolloutState],
        *,
        actor: str,
        action: str,
        reason: str,
        automatic: bool = False,
    ) -> RolloutState:
        for _ in range(_CAS_ATTEMPTS):
            before = self._store.get_rollout(initial=self._initial)
            after = replace(
                mutate(before),
                updated_at=max(self._clock(), before.updated_at + 1e-6),
                updated_by=actor,
            )
            if self._store.save_rollout(
                after, expected=before, action=action, reason=reason, automatic=automatic
            ):
                self._cached = (after, time.monotonic())
                log.info("rollout %s by %s: %s (%s)", action, actor, _summary(after), reason)
                return after
        raise StoreError("the rollout kept changing under us; try again")


def _summary(state: RolloutState) -> str:
    return (
        f"{state.percentage}% new, shadow={'on' if state.shadow else 'off'}, "
        f"n8n={'on' if state.n8n_enabled else 'off'}, paused={state.queue_paused}"
    )
