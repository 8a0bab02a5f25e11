"""The automatic rollback guard and the new pipeline's health over a sliding window.

The worker's maintenance loop runs `RolloutGuard.check` every few seconds. Any process may run it:
rollback is idempotent, and once the percentage is 0 there is nothing left to guard.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from app.domain.health import PipelineHealth, guard_verdict
from app.services.rollout import RollbackResult, RolloutService
from app.store.base import RuntimeState

log = logging.getLogger(__name__)

HEARTBEAT_STALE_S = 30.0
GUARD_ACTOR = "rollback-guard"


class Notifier(Protocol):
    def alert(self, level: str, title: str, message: str) -> bool: ...


def pipeline_health(
    store: RuntimeState, *, window_s: float, now: float | None = None
) -> PipelineHealth:
    now = time.time() if now is None else now
    stats = store.reply_window_stats(since=now - window_s, now=now)
    alive = store.live_workers(since=now - HEARTBEAT_STALE_S)
    return PipelineHealth(
        window_s=window_s,
        finished=stats.finished,
        failed=stats.failed,
        sent=stats.sent,
        fallbacks=stats.fallbacks,
        p50_latency_s=stats.p50_s,
        p95_latency_s=stats.p95_s,
        backlog=stats.backlog,
        workers_alive=len(alive),
    )


class RolloutGuard:
    def __init__(
        self,
        store: RuntimeState,
        rollout: RolloutService,
        notifier: Notifier,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._rollout = rollout
        self._notifier = notifier
        self._clock = clock

    def check(self) -> RollbackResult | None:
        state = self._rollout.current(fresh=True)
        if state.percentage == 0 or not state.guard.enabled or not self._rollout.n8n_configured:
            return None
        health = pipeline_health(self._store, window_s=state.guard.window_s, now=self._clock())
        verdict = guard_verdict(state.guard, health)
        if verdict is None:
            return None
        log.error("rollback guard tripped: %s", verdict)
        result = self._rollout.rollback(actor=GUARD_ACTOR, reason=verdict, automatic=True)
        self._notifier.alert(
            "critical",
            "ai-broker rolled back to n8n automatically",
            f"{verdict}. Traffic was at {state.percentage} %; it is now 0 % (n8n answers "
            f"everything). {result.cancelled} unsent replies were cancelled, "
            f"{result.forwarded} handed to n8n. Investigate before raising the percentage.",
        )
        return result
