"""Reply similarity, the automatic-rollback guard's verdict and the migration advice."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from app.domain.health import BACKLOG_WARNING, PipelineHealth, guard_verdict, recommendations
from app.domain.rollout import GuardThresholds, RolloutState
from app.domain.similarity import similarity, words

REPLY = (
    "Hi Tan, refinancing your HDB loan to a bank loan is possible; "
    "current fixed rates start around 2.6%."
)


# -- similarity -----------------------------------------------------------------------------
def test_identical_replies_score_one() -> None:
    assert similarity(REPLY, REPLY) == 1.0
    assert similarity("", "") == 1.0


def test_unrelated_replies_score_low() -> None:
    assert similarity(REPLY, "The weather in Oslo is cold and windy today.") < 0.2
    assert similarity("apples oranges pears", "trains buses ferries") == 0.0
    assert similarity(REPLY, "") == 0.0


def test_case_and_punctuation_do_not_matter() -> None:
    shouted = REPLY.upper().replace(",", "").replace(";", " !").replace("Hi", "HI,")
    assert similarity(REPLY, shouted) == 1.0
    assert similarity("Hello, world!", "hello world") == 1.0
    assert similarity("Rates: 2.6% p.a.", "rates 2.6% p.a") == 1.0


def test_numbers_keep_their_decimals() -> None:
    assert words("Rates from 2.6%, or $1,200.") == ["rates", "from", "2.6%", "or", "$1,200"]
    assert similarity("rate 2.6%", "rate 3.1%") < 1.0


def test_similarity_is_order_aware_and_partial() -> None:
    shuffled = similarity("one two three four", "four three two one")
    partial = similarity("one two three four", "one two three five")
    assert 0 < shuffled < partial < 1
    assert partial == 0.75


# -- guard_verdict --------------------------------------------------------------------------
def health(**overrides: Any) -> PipelineHealth:
    base = PipelineHealth(
        window_s=600,
        finished=100,
        failed=0,
        sent=100,
        fallbacks=0,
        p50_latency_s=3.0,
        p95_latency_s=6.0,
        backlog=0,
        workers_alive=2,
    )
    return replace(base, **overrides)


GUARD = GuardThresholds(
    max_failure_rate=0.05, max_fallback_rate=0.25, max_p95_latency_s=20.0, min_sample=20
)


def test_healthy_pipeline_has_no_verdict() -> None:
    assert guard_verdict(GUARD, health()) is None


def test_below_the_minimum_sample_there_is_no_verdict() -> None:
    awful = health(finished=19, failed=19, sent=0, p95_latency_s=500.0)
    assert guard_verdict(GUARD, awful) is None
    assert guard_verdict(GUARD, replace(awful, finished=20, failed=20)) is not None


def test_failure_rate_trips_naming_it() -> None:
    at_limit = health(finished=100, failed=5, sent=95)
    assert guard_verdict(GUARD, at_limit) is None  # 5 % is allowed, above it is not
    verdict = guard_verdict(GUARD, health(finished=100, failed=6, sent=94))
    assert verdict is not None
    assert "failure rate 6%" in verdict and "exceeds 5%" in verdict and "100 replies" in verdict


def test_fallback_rate_trips_naming_it() -> None:
    assert guard_verdict(GUARD, health(sent=100, fallbacks=25)) is None
    verdict = guard_verdict(GUARD, health(sent=100, fallbacks=30))
    assert verdict is not None
    assert "fallback rate 30%" in verdict and "exceeds 25%" in verdict


def test_p95_latency_trips_naming_it() -> None:
    assert guard_verdict(GUARD, health(p95_latency_s=20.0)) is None
    verdict = guard_verdict(GUARD, health(p95_latency_s=25.5))
    assert verdict is not None
    assert "p95 reply latency 25.5 s" in verdict and "20.0 s" in verdict
    assert guard_verdict(GUARD, health(p50_latency_s=None, p95_latency_s=None)) is None


def test_disabled_guard_never_trips() -> None:
    off = replace(GUARD, enabled=False)
    assert guard_verdict(off, health(failed=100, fallbacks=100, p95_latency_s=999.0)) is None


# -- recommendations ------------------------------------------------------------------------
def advice(state: RolloutState, pipeline: PipelineHealth, *, configured: bool = True) -> str:
    return "\n".join(recommendations(state, pipeline, n8n_configured=configured))


def test_without_n8n_there_is_nothing_to_migrate() -> None:
    said = recommendations(RolloutState(), health(), n8n_configured=False)
    assert said == ["No n8n workflow is configured; there is nothing to migrate from."]


def test_no_workers_is_called_out() -> None:
    said = advice(RolloutState(percentage=10), health(workers_alive=0))
    assert "No worker is alive" in said and "ai-broker worker" in said
    assert "safe to increase" not in said


def test_backlog_is_called_out() -> None:
    assert "overdue" not in advice(RolloutState(percentage=10), health(backlog=BACKLOG_WARNING))
    said = advice(RolloutState(percentage=10), health(backlog=BACKLOG_WARNING + 5))
    assert f"{BACKLOG_WARNING + 5} replies are overdue" in said
    assert "safe to increase" not in said


def test_failure_rate_is_called_out() -> None:
    assert "Failure rate" not in advice(RolloutState(percentage=10), health(failed=1))
    said = advice(RolloutState(percentage=10), health(finished=100, failed=3))
    assert "Failure rate is 3.0%" in said
    assert "safe to increase" not in said


def test_shadow_is_suggested_at_zero_percent_without_shadow() -> None:
    said = advice(RolloutState(percentage=0, shadow=False), health(finished=0, sent=0))
    assert "Turn shadow mode on" in said
    with_shadow = advice(RolloutState(percentage=0, shadow=True), health(finished=0, sent=0))
    assert "Turn shadow mode on" not in with_shadow
    assert "Stable: safe to increase to 10 %." in with_shadow
    assert "Turn shadow mode on" not in advice(RolloutState(percentage=10), health())


@pytest.mark.parametrize(
    ("percentage", "following"), [(10, 25), (25, 50), (30, 50), (50, 75), (90, 100)]
)
def test_next_step_when_stable(percentage: int, following: int) -> None:
    said = advice(RolloutState(percentage=percentage), health(finished=20, sent=20))
    assert said == f"Stable: safe to increase to {following} %."


def test_waits_for_enough_replies_before_the_next_step() -> None:
    said = advice(RolloutState(percentage=10), health(finished=5, sent=5))
    assert said == "Wait for at least 20 finished replies before the next step."


def test_at_100_percent_with_n8n_on_suggests_disabling_it() -> None:
    said = advice(RolloutState(percentage=100), health())
    assert said == "Consider disabling n8n after a week of stability at 100 %."
    assert advice(RolloutState(percentage=100, n8n_enabled=False), health()) == ""
    troubled = advice(RolloutState(percentage=100), health(workers_alive=0))
    assert "Consider disabling n8n" not in troubled
