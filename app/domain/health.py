"""How the new pipeline is doing, the automatic-rollback guard, and what operators should do next.

The figures come from the ledger over a sliding window (computed by the store); the rules here
are pure so the guard, the status route and the console all say the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.domain.rollout import GuardThresholds, RolloutState


@dataclass(frozen=True)
class PipelineHealth:
    window_s: float
    finished: int  # replies that reached an end: sent, handed off or failed
    failed: int
    sent: int
    fallbacks: int
    p50_latency_s: float | None
    p95_latency_s: float | None
    backlog: int  # jobs queued or waiting past their due time
    workers_alive: int

    @property
    def failure_rate(self) -> float:
        return self.failed / self.finished if self.finished else 0.0

    @property
    def fallback_rate(self) -> float:
        return self.fallbacks / self.sent if self.sent else 0.0


def guard_verdict(guard: GuardThresholds, health: PipelineHealth) -> str | None:
    """Why the pipeline must be rolled back now, or None. Needs `min_sample` finished replies:
    two failures out of three are noise, not evidence."""
    if not guard.enabled or health.finished < guard.min_sample:
        return None
    if health.failure_rate > guard.max_failure_rate:
        return (
            f"failure rate {health.failure_rate:.0%} over {health.finished} replies "
            f"exceeds {guard.max_failure_rate:.0%}"
        )
    if health.fallback_rate > guard.max_fallback_rate:
        return (
            f"fallback rate {health.fallback_rate:.0%} over {health.sent} replies "
            f"exceeds {guard.max_fallback_rate:.0%}"
        )
    if health.p95_latency_s is not None and health.p95_latency_s > guard.max_p95_latency_s:
        return (
            f"p95 reply latency {health.p95_latency_s:.1f} s exceeds "
            f"{guard.max_p95_latency_s:.1f} s"
        )
    return None


@dataclass(frozen=True)
class ThresholdBreach:
    """A rate above its guard threshold that the guard will not act on (yet)."""

    metric: str  # "failure" or "fallback"
    rate: float
    threshold: float
    replies: int  # what the rate is over
    reason: str  # why the guard does not act


def unguarded_breaches(guard: GuardThresholds, health: PipelineHealth) -> list[ThresholdBreach]:
    """Rates over the guard's thresholds where `guard_verdict` says nothing: too few replies
    for it to act, or the guard is off. Not evidence enough to roll back, but never all clear:
    three fallbacks out of three is what an LLM outage looks like in its first minute."""
    if health.finished == 0 or (guard.enabled and health.finished >= guard.min_sample):
        return []
    reason = (
        "the guard is off"
        if not guard.enabled
        else f"too few replies for the guard to act (it needs {guard.min_sample})"
    )
    found: list[ThresholdBreach] = []
    if health.failure_rate > guard.max_failure_rate:
        found.append(
            ThresholdBreach(
                "failure", health.failure_rate, guard.max_failure_rate, health.finished, reason
            )
        )
    if health.sent and health.fallback_rate > guard.max_fallback_rate:
        found.append(
            ThresholdBreach(
                "fallback", health.fallback_rate, guard.max_fallback_rate, health.sent, reason
            )
        )
    return found


BACKLOG_WARNING = 20
NEXT_STEPS = (0, 10, 25, 50, 75, 90, 100)


def recommendations(
    state: RolloutState, health: PipelineHealth, *, n8n_configured: bool
) -> list[str]:
    """The plan's migration advice, made concrete with this system's numbers."""
    advice: list[str] = []
    if not n8n_configured:
        return ["No n8n workflow is configured; there is nothing to migrate from."]
    if health.workers_alive == 0:
        advice.append("No worker is alive: start `ai-broker worker` before routing traffic.")
    if health.backlog > BACKLOG_WARNING:
        advice.append(
            f"{health.backlog} replies are overdue: add workers or raise WORKER_CONCURRENCY "
            "before increasing traffic."
        )
    if health.failure_rate > 0.01 and health.finished:
        advice.append(
            f"Failure rate is {health.failure_rate:.1%}: investigate failed jobs before "
            "increasing traffic."
        )
    if state.percentage == 0 and not state.shadow:
        advice.append("Turn shadow mode on to compare the new pipeline's replies with n8n's.")
    troubled = bool(advice)
    if not troubled and state.percentage < 100:
        following = next(step for step in NEXT_STEPS if step > state.percentage)
        if health.finished >= 20 or state.percentage == 0:
            advice.append(f"Stable: safe to increase to {following} %.")
        else:
            advice.append("Wait for at least 20 finished replies before the next step.")
    if state.percentage == 100 and state.n8n_enabled and not troubled:
        advice.append("Consider disabling n8n after a week of stability at 100 %.")
    return advice
