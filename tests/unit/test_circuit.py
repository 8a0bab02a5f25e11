"""The n8n circuit breaker's transitions (app/domain/circuit.py), driven by hand-set clocks."""

from __future__ import annotations

import pytest

from app.domain.circuit import (
    COOLDOWN_S,
    FAILURE_THRESHOLD,
    PROBE_TIMEOUT_S,
    Circuit,
    CircuitPosition,
    admit,
    record,
)

T0 = 1_000_000.0


def opened(at: float = T0) -> Circuit:
    circuit = Circuit()
    for i in range(FAILURE_THRESHOLD):
        circuit = record(circuit, success=False, now=at - FAILURE_THRESHOLD + 1 + i)
    assert circuit.position is CircuitPosition.OPEN
    return circuit


def test_thresholds_are_sane() -> None:
    assert FAILURE_THRESHOLD >= 2
    assert COOLDOWN_S > 0 and PROBE_TIMEOUT_S > 0


def test_closed_stays_closed_and_unchanged_under_successes() -> None:
    circuit = Circuit()
    for i in range(100):
        allowed, after = admit(circuit, T0 + i)
        assert allowed and after == circuit
        assert record(circuit, success=True, now=T0 + i) == circuit


def test_a_success_resets_the_failure_count() -> None:
    circuit = Circuit()
    for _ in range(FAILURE_THRESHOLD - 1):
        circuit = record(circuit, success=False, now=T0)
    assert circuit.position is CircuitPosition.CLOSED
    assert circuit.consecutive_failures == FAILURE_THRESHOLD - 1
    circuit = record(circuit, success=True, now=T0)
    assert circuit.consecutive_failures == 0
    # Failures that are not consecutive never open it.
    for _ in range(3):
        for _ in range(FAILURE_THRESHOLD - 1):
            circuit = record(circuit, success=False, now=T0)
        circuit = record(circuit, success=True, now=T0)
    assert circuit.position is CircuitPosition.CLOSED


def test_opens_after_threshold_consecutive_failures() -> None:
    circuit = Circuit()
    for i in range(FAILURE_THRESHOLD - 1):
        circuit = record(circuit, success=False, now=T0 + i)
        assert circuit.position is CircuitPosition.CLOSED
        assert admit(circuit, T0 + i)[0]
    circuit = record(circuit, success=False, now=T0 + 10)
    assert circuit.position is CircuitPosition.OPEN
    assert circuit.opened_at == T0 + 10
    assert circuit.consecutive_failures == FAILURE_THRESHOLD


def test_open_refuses_until_the_cooldown_is_over() -> None:
    circuit = opened()
    for elapsed in (0.0, 1.0, COOLDOWN_S / 2, COOLDOWN_S - 0.01):
        allowed, after = admit(circuit, T0 + elapsed)
        assert not allowed
        assert after == circuit  # refusing writes nothing


def test_after_the_cooldown_exactly_one_probe_is_admitted() -> None:
    circuit = opened()
    allowed, probing = admit(circuit, T0 + COOLDOWN_S)
    assert allowed
    assert probing.position is CircuitPosition.HALF_OPEN
    assert probing.probe_started_at == T0 + COOLDOWN_S
    # While the probe is out, nobody else gets through.
    for elapsed in (0.0, 1.0, PROBE_TIMEOUT_S - 0.01):
        allowed, after = admit(probing, T0 + COOLDOWN_S + elapsed)
        assert not allowed and after == probing


def test_a_probe_that_never_reported_frees_its_slot_after_the_probe_timeout() -> None:
    circuit = opened()
    _, probing = admit(circuit, T0 + COOLDOWN_S)
    later = T0 + COOLDOWN_S + PROBE_TIMEOUT_S
    allowed, second = admit(probing, later)
    assert allowed
    assert second.position is CircuitPosition.HALF_OPEN and second.probe_started_at == later
    assert not admit(second, later + 1)[0]


def test_probe_success_closes() -> None:
    _, probing = admit(opened(), T0 + COOLDOWN_S)
    closed = record(probing, success=True, now=T0 + COOLDOWN_S + 1)
    assert closed.position is CircuitPosition.CLOSED
    assert closed.consecutive_failures == 0
    assert closed.opened_at is None and closed.probe_started_at is None
    assert admit(closed, T0 + COOLDOWN_S + 1) == (True, closed)


def test_probe_failure_reopens_with_a_new_opened_at() -> None:
    _, probing = admit(opened(), T0 + COOLDOWN_S)
    failed_at = T0 + COOLDOWN_S + 2
    reopened = record(probing, success=False, now=failed_at)
    assert reopened.position is CircuitPosition.OPEN
    assert reopened.opened_at == failed_at
    assert reopened.probe_started_at is None
    # A new cooldown from the probe's failure, not from the first opening.
    assert not admit(reopened, T0 + COOLDOWN_S + 3)[0]
    assert not admit(reopened, failed_at + COOLDOWN_S - 0.01)[0]
    assert admit(reopened, failed_at + COOLDOWN_S)[0]


@pytest.mark.parametrize("threshold", [1, 3])
def test_threshold_is_a_parameter(threshold: int) -> None:
    circuit = Circuit()
    for _ in range(threshold):
        circuit = record(circuit, success=False, now=T0, threshold=threshold)
    assert circuit.position is CircuitPosition.OPEN


def test_transitions_keep_the_version_for_the_store_to_bump() -> None:
    circuit = Circuit(version=7)
    assert record(circuit, success=False, now=T0).version == 7
    assert admit(opened(), T0 + COOLDOWN_S)[1].version == 0


@pytest.mark.parametrize("cooldown_s", [1.0, 5.0, 120.0])
def test_cooldown_is_a_parameter(cooldown_s: float) -> None:
    circuit = opened()
    assert not admit(circuit, T0 + cooldown_s - 0.01, cooldown_s=cooldown_s)[0]
    allowed, probing = admit(circuit, T0 + cooldown_s, cooldown_s=cooldown_s)
    assert allowed and probing.position is CircuitPosition.HALF_OPEN
    # A probe that fails opens it again for the same configured cooldown.
    reopened = record(probing, success=False, now=T0 + cooldown_s + 1)
    assert not admit(reopened, T0 + 2 * cooldown_s + 0.99, cooldown_s=cooldown_s)[0]
    assert admit(reopened, T0 + 2 * cooldown_s + 1, cooldown_s=cooldown_s)[0]
