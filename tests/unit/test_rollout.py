"""Rollout rules (docs/migration.md, How routing works): sticky, monotonic buckets and the rules
for changing the state."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.domain.rollout import (
    BUCKET_PREFIX,
    GUARD_RANGES,
    GuardThresholds,
    RolloutChange,
    RolloutError,
    RolloutState,
    Route,
    apply_change,
    bucket,
    describe,
)


def murmur3_32(data: bytes, seed: int = 0) -> int:
    """MurmurHash3 x86_32, written from the reference algorithm (independent of mmh3)."""
    c1, c2 = 0xCC9E2D51, 0x1B873593
    mask = 0xFFFFFFFF

    def rotl(value: int, bits: int) -> int:
        return ((value << bits) | (value >> (32 - bits))) & mask

    h = seed & mask
    whole = len(data) // 4 * 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = rotl((k * c1) & mask, 15)
        h ^= (k * c2) & mask
        h = (rotl(h, 13) * 5 + 0xE6546B64) & mask
    tail = data[whole:]
    if tail:
        k = int.from_bytes(tail, "little")
        k = rotl((k * c1) & mask, 15)
        h ^= (k * c2) & mask
    h ^= len(data)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & mask
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & mask
    return h ^ (h >> 16)


# -- bucket ---------------------------------------------------------------------------------
def test_reference_murmur3_matches_published_vectors() -> None:
    assert murmur3_32(b"") == 0
    assert murmur3_32(b"hello") == 613153351  # 0x248bfa47
    assert murmur3_32(b"The quick brown fox jumps over the lazy dog", 0x9747B28C) == 0x2FA826CD


def test_bucket_of_the_documented_example() -> None:
    assert BUCKET_PREFIX == "reply-pipeline:"
    assert murmur3_32(b"reply-pipeline:318") == 4256228227
    assert bucket(318) == 4256228227 % 100 + 1 == 28


@given(st.integers(min_value=0, max_value=2**40))
def test_bucket_is_murmur3_of_the_prefixed_id(conversation_id: int) -> None:
    expected = murmur3_32(f"reply-pipeline:{conversation_id}".encode()) % 100 + 1
    assert bucket(conversation_id) == expected
    assert 1 <= bucket(conversation_id) <= 100


def test_bucket_is_stable() -> None:
    assert [bucket(318) for _ in range(5)] == [28] * 5


def test_share_on_the_new_pipeline_follows_the_percentage() -> None:
    state = RolloutState(percentage=30)
    routes = [state.route_for(i, n8n_configured=True) for i in range(1, 10_001)]
    share = routes.count(Route.NEW) / len(routes)
    assert 0.28 <= share <= 0.32, share


@pytest.mark.parametrize("percentage", [0, 100])
def test_extremes_route_everything_one_way(percentage: int) -> None:
    state = RolloutState(percentage=percentage)
    expected = Route.NEW if percentage == 100 else Route.N8N
    assert {state.route_for(i, n8n_configured=True) for i in range(2000)} == {expected}


@given(
    conversation_id=st.integers(min_value=1, max_value=2**31),
    lower=st.integers(min_value=0, max_value=100),
    higher=st.integers(min_value=0, max_value=100),
)
def test_raising_the_percentage_never_moves_a_conversation_back_to_n8n(
    conversation_id: int, lower: int, higher: int
) -> None:
    lower, higher = sorted((lower, higher))
    before = RolloutState(percentage=lower).route_for(conversation_id, n8n_configured=True)
    after = RolloutState(percentage=higher).route_for(conversation_id, n8n_configured=True)
    if before is Route.NEW:
        assert after is Route.NEW


@given(st.integers(min_value=0, max_value=2**31), st.integers(min_value=0, max_value=100))
def test_without_n8n_the_new_pipeline_answers_everything(
    conversation_id: int, percentage: int
) -> None:
    state = RolloutState(percentage=percentage)
    assert state.route_for(conversation_id, n8n_configured=False) is Route.NEW
    # Disabled n8n (only reachable at 100 % through apply_change, but never routed to anyway).
    disabled = RolloutState(percentage=percentage, n8n_enabled=False)
    assert disabled.route_for(conversation_id, n8n_configured=True) is Route.NEW


def test_shadows_only_n8n_routed_messages_with_shadow_on_and_n8n_configured() -> None:
    on, off = RolloutState(shadow=True), RolloutState(shadow=False)
    assert on.shadows(Route.N8N, n8n_configured=True)
    assert not on.shadows(Route.NEW, n8n_configured=True)
    assert not on.shadows(Route.N8N, n8n_configured=False)
    assert not off.shadows(Route.N8N, n8n_configured=True)


# -- apply_change ---------------------------------------------------------------------------
def test_apply_change_changes_only_what_is_given() -> None:
    current = RolloutState(percentage=10, shadow=True, queue_paused=True, updated_by="x")
    after = apply_change(current, RolloutChange(percentage=25))
    assert after == RolloutState(percentage=25, shadow=True, queue_paused=True, updated_by="x")
    assert apply_change(current, RolloutChange()) == current
    assert apply_change(current, RolloutChange(shadow=False)).shadow is False


@pytest.mark.parametrize("percentage", [-1, 101, 1000])
def test_percentage_out_of_bounds_is_refused(percentage: int) -> None:
    with pytest.raises(RolloutError, match="between 0 and 100"):
        apply_change(RolloutState(), RolloutChange(percentage=percentage))


@pytest.mark.parametrize("percentage", [0, 100])
def test_percentage_bounds_are_inclusive(percentage: int) -> None:
    assert apply_change(RolloutState(), RolloutChange(percentage=percentage)).percentage == (
        percentage
    )


@pytest.mark.parametrize("percentage", [0, 60, 99])
def test_disabling_n8n_below_100_is_refused_with_what_to_do(percentage: int) -> None:
    with pytest.raises(RolloutError) as refused:
        apply_change(RolloutState(percentage=percentage), RolloutChange(n8n_enabled=False))
    message = str(refused.value)
    assert "100" in message
    assert f"{100 - percentage} %" in message
    assert "raise the percentage to 100 first" in message


def test_lowering_the_percentage_with_n8n_disabled_is_refused() -> None:
    cut_over = RolloutState(percentage=100, n8n_enabled=False)
    with pytest.raises(RolloutError, match="n8n can only be disabled at 100"):
        apply_change(cut_over, RolloutChange(percentage=90))
    # Re-enabling n8n in the same change makes it fine.
    after = apply_change(cut_over, RolloutChange(percentage=90, n8n_enabled=True))
    assert (after.percentage, after.n8n_enabled) == (90, True)


def test_disabling_n8n_at_100_is_allowed() -> None:
    after = apply_change(RolloutState(percentage=100), RolloutChange(n8n_enabled=False))
    assert after.n8n_enabled is False
    both = apply_change(RolloutState(), RolloutChange(percentage=100, n8n_enabled=False))
    assert (both.percentage, both.n8n_enabled) == (100, False)


@pytest.mark.parametrize(
    ("guard", "message"),
    [
        (GuardThresholds(max_failure_rate=0), "guard.max_failure_rate"),
        (GuardThresholds(max_failure_rate=1.5), "guard.max_failure_rate"),
        (GuardThresholds(max_fallback_rate=-0.1), "guard.max_fallback_rate"),
        (GuardThresholds(max_p95_latency_s=0), "guard.max_p95_latency_s"),
        (GuardThresholds(window_s=59), "guard.window_s"),
        (GuardThresholds(min_sample=0), "guard.min_sample"),
    ],
)
def test_invalid_guards_are_refused_naming_the_field(guard: GuardThresholds, message: str) -> None:
    with pytest.raises(RolloutError, match=message):
        apply_change(RolloutState(), RolloutChange(guard=guard))


def test_valid_guard_is_applied() -> None:
    guard = GuardThresholds(
        enabled=False,
        max_failure_rate=1.0,
        max_fallback_rate=0.5,
        max_p95_latency_s=5,
        window_s=60,
        min_sample=1,
    )
    assert apply_change(RolloutState(), RolloutChange(guard=guard)).guard == guard


# -- describe -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("state", "configured", "expected"),
    [
        (RolloutState(percentage=40), False, "No n8n workflow is configured"),
        (RolloutState(), True, "n8n answers every conversation; the new pipeline answers none."),
        (RolloutState(shadow=True), True, "Shadow mode: n8n answers every conversation"),
        (RolloutState(percentage=10), True, "Gradual rollout: the new pipeline answers 10 %"),
        (RolloutState(percentage=49), True, "Gradual rollout: the new pipeline answers 49 %"),
        (RolloutState(percentage=50), True, "Majority on the new pipeline: 50 %"),
        (RolloutState(percentage=99), True, "Majority on the new pipeline: 99 %"),
        (RolloutState(percentage=100), True, "n8n stays enabled as the rollback path"),
        (
            RolloutState(percentage=100, n8n_enabled=False),
            True,
            "Cut-over complete: n8n is disabled",
        ),
    ],
)
def test_describe(state: RolloutState, configured: bool, expected: str) -> None:
    assert expected in describe(state, n8n_configured=configured)


def test_describe_names_the_shadow_mode_only_when_on() -> None:
    assert "sends nothing" in describe(RolloutState(shadow=True), n8n_configured=True)
    assert "Shadow" not in describe(RolloutState(), n8n_configured=True)


def test_guard_ranges_are_enforced_below_the_web_layer_too() -> None:
    """The rule is the domain's: the console and the automatic paths get it as well."""
    current = RolloutState()
    for name, (low, high) in GUARD_RANGES.items():
        for bad in (low / 2 if low > 0 else -1, high * 2, math.nan, math.inf):
            change = RolloutChange(guard=replace(current.guard, **{name: bad}))
            with pytest.raises(RolloutError, match=f"guard.{name}"):
                apply_change(current, change)
        edge = RolloutChange(guard=replace(current.guard, **{name: high}))
        assert getattr(apply_change(current, edge).guard, name) == high
