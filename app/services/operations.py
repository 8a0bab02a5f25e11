"""Operator actions, done one way whoever asks for them.

The admin API, the console and the command line all call this service, so an action has one
implementation and leaves one kind of audit row: who (the authenticated actor), when, what (the
action and its target) and why. Rollout changes, rollbacks and pauses are audited by the rollout
service in the same transaction as the change itself (the rollout audit); retries, cancellations,
putting parked messages back and verdicts go to the operator-action log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from app.domain.rollout import RolloutChange, RolloutState
from app.ports import JobQueue
from app.ports.intake_buffer import IntakeBufferError, ParkedIntake
from app.services.rollout import RollbackResult, RolloutService
from app.store.analytics import Analytics
from app.store.base import Store
from app.store.models import Verdict

log = logging.getLogger(__name__)

# operator_actions.target of putting parked messages back (there is no job yet), with the count.
PARKED_TARGET = "intake buffer"
MAX_NOTE_CHARS = 500


@dataclass(frozen=True)
class ActionResult:
    ok: bool
    message: str


class Operations:
    def __init__(
        self,
        *,
        store: Store,
        analytics: Analytics,
        queue: JobQueue,
        rollout: RolloutService,
        intake_buffer: ParkedIntake | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._analytics = analytics
        self._queue = queue
        self._rollout = rollout
        self._buffer = intake_buffer
        self._clock = clock

    # -- jobs ----------------------------------------------------------------------------------
    def retry_job(self, *, actor: str, job_id: str, reason: str) -> ActionResult:
        """A failed or cancelled job back to queued with fresh attempts, and on the queue."""
        now = self._clock()
        job = self._store.requeue_job(job_id, now=now)
        if job is None:
            return ActionResult(False, "Only a failed or cancelled job can be retried.")
        self._queue.enqueue_prepare(job.id)
        self._audit(actor, "retry", job_id, reason, now)
        return ActionResult(True, "Job re-queued: a worker picks it up within seconds.")

    def cancel_job(self, *, actor: str, job_id: str, reason: str) -> ActionResult:
        now = self._clock()
        if not self._store.cancel_job(job_id, reason=f"cancelled by {actor}: {reason}", now=now):
            return ActionResult(False, "Only a job that has not started sending can be cancelled.")
        self._audit(actor, "cancel", job_id, reason, now)
        return ActionResult(True, "Job cancelled: its reply will not be sent.")

    # -- the intake buffer ---------------------------------------------------------------------
    def replay_parked(self, *, actor: str, reason: str) -> ActionResult:
        """Every parked intake message back in the buffer, for the workers to record again
        (idempotent: a message already in the ledger makes no second job)."""
        if self._buffer is None:
            return ActionResult(False, "There is no intake buffer: REDIS_URL is not set.")
        try:
            moved = self._buffer.replay_rejected()
        except IntakeBufferError as exc:
            log.warning("parked intake messages not put back: %s", exc)
            return ActionResult(
                False,
                f"Redis did not answer ({exc}). Some messages may have moved; the parked count "
                "shows what is left.",
            )
        if not moved:
            return ActionResult(False, "Nothing is parked: there was nothing to put back.")
        messages = f"{moved:,} message{'s' if moved != 1 else ''}"
        self._audit(actor, "replay_intake", f"{PARKED_TARGET} ({messages})", reason, self._clock())
        return ActionResult(
            True,
            f"{moved:,} parked message{'s' if moved != 1 else ''} back in the intake buffer: "
            "workers record them within seconds.",
        )

    # -- comparisons ---------------------------------------------------------------------------
    def set_verdict(self, *, actor: str, comparison_id: int, verdict: Verdict, note: str) -> bool:
        """Whether the comparison exists (and now carries the verdict)."""
        now = self._clock()
        note = note.strip()[:MAX_NOTE_CHARS]
        if not self._store.set_verdict(comparison_id, verdict, note=note, actor=actor, now=now):
            return False
        self._audit(
            actor, "verdict", f"comparison {comparison_id}", f"{verdict.value}: {note}", now
        )
        return True

    # -- the rollout (audited by the rollout service, in the same transaction) -----------------
    def change_rollout(self, *, actor: str, change: RolloutChange, reason: str) -> RolloutState:
        """Raises RolloutError when the change breaks a rule (the message says why)."""
        return self._rollout.change(change, actor=actor, reason=reason)

    def rollback(self, *, actor: str, reason: str) -> RollbackResult:
        """Raises RolloutError when there is no n8n to roll back to."""
        return self._rollout.rollback(actor=actor, reason=reason)

    def set_paused(self, *, actor: str, paused: bool, reason: str) -> RolloutState:
        return self._rollout.set_paused(paused, actor=actor, reason=reason)

    def _audit(self, actor: str, action: str, target: str, reason: str, now: float) -> None:
        self._analytics.record_operator_action(
            actor=actor, action=action, target=target, reason=reason, now=now
        )
        log.warning("%s: %s %s (%s)", actor, action, target, reason)
