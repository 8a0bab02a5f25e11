"""Rates over the guard's thresholds that the guard does not act on (app/domain/health.py)."""

from __future__ import annotations

from dataclasses import replace

from app.domain.health import PipelineHealth, ThresholdBreach, guard_verdict, unguarded_breaches
from app.domain.rollout import GuardThresholds

GUARD = GuardThresholds()  # failure 5 %, fallback 25 %, min_sample 20
QUIET = PipelineHealth(600, 0, 0, 0, 0, None, None, 0, 1)


def health(finished: int, failed: int = 0, fallbacks: int = 0) -> PipelineHealth:
    return replace(
        QUIET, finished=finished, failed=failed, sent=finished - failed, fallbacks=fallbacks
    )


def test_nothing_finished_is_nothing_to_say() -> None:
    assert unguarded_breaches(GUARD, QUIET) == []


def test_a_small_sample_over_a_threshold_is_reported_with_why_the_guard_waits() -> None:
    [fallback] = unguarded_breaches(GUARD, health(3, fallbacks=3))
    assert fallback == ThresholdBreach(
        "fallback",
        1.0,
        GUARD.max_fallback_rate,
        3,
        "too few replies for the guard to act (it needs 20)",
    )
    [failure] = unguarded_breaches(GUARD, health(4, failed=1))
    assert (failure.metric, failure.rate, failure.replies) == ("failure", 0.25, 4)


def test_rates_at_or_under_their_thresholds_are_not_breaches() -> None:
    assert unguarded_breaches(GUARD, health(4, fallbacks=1)) == []  # 25 % is the threshold itself


def test_from_min_sample_the_guard_speaks_and_this_is_silent() -> None:
    enough = health(20, fallbacks=20)
    assert unguarded_breaches(GUARD, enough) == []
    assert guard_verdict(GUARD, enough) is not None


def test_with_the_guard_off_any_sample_is_reported() -> None:
    off = replace(GUARD, enabled=False)
    [breach] = unguarded_breaches(off, health(500, fallbacks=400))
    assert (breach.metric, breach.reason) == ("fallback", "the guard is off")
    assert guard_verdict(off, health(500, fallbacks=400)) is None
