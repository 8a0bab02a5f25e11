"""The n8n circuit breaker's rules, as pure transitions (the store persists the state).

closed ──N consecutive failures──▶ open ──cooldown over──▶ half_open (one probe in flight)
  ▲                                  ▲                          │
  └────────── probe succeeds ────────┼──────────────────────────┤
                                     └────── probe fails ───────┘
While open, messages routed to n8n are answered by the new pipeline instead.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

FAILURE_THRESHOLD = 5
COOLDOWN_S = 30.0  # the default; operators set it with N8N_CIRCUIT_COOLDOWN_S
PROBE_TIMEOUT_S = 10.0  # a probe that never reported back frees the slot for another


class CircuitPosition(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class Circuit:
    position: CircuitPosition = CircuitPosition.CLOSED
    consecutive_failures: int = 0
    opened_at: float | None = None
    probe_started_at: float | None = None
    version: int = 0


def admit(circuit: Circuit, now: float, *, cooldown_s: float = COOLDOWN_S) -> tuple[bool, Circuit]:
    """Whether a request may go to n8n now, and the state after deciding (a probe slot taken)."""
    if circuit.position is CircuitPosition.CLOSED:
        return True, circuit
    probe_busy = (
        circuit.position is CircuitPosition.HALF_OPEN
        and circuit.probe_started_at is not None
        and now - circuit.probe_started_at < PROBE_TIMEOUT_S
    )
    cooled = circuit.opened_at is None or now - circuit.opened_at >= cooldown_s
    if probe_busy or not cooled:
        return False, circuit
    return True, replace(circuit, position=CircuitPosition.HALF_OPEN, probe_started_at=now)


def record(
    circuit: Circuit, *, success: bool, now: float, threshold: int = FAILURE_THRESHOLD
) -> Circuit:
    """The state after a request to n8n succeeded or failed."""
    if success:
        return replace(
            circuit,
            position=CircuitPosition.CLOSED,
            consecutive_failures=0,
            opened_at=None,
            probe_started_at=None,
        )
    failures = circuit.consecutive_failures + 1
    if circuit.position is CircuitPosition.HALF_OPEN or failures >= threshold:
        return replace(
            circuit,
            position=CircuitPosition.OPEN,
            consecutive_failures=failures,
            opened_at=now,
            probe_started_at=None,
        )
    return replace(circuit, consecutive_failures=failures)
