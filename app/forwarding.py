"""Handing customer messages to n8n: the circuit breaker and the forward itself.

The breaker's state lives in the store so every receiver process sees the same circuit; each
transition is a compare-and-set, and the common case (closed, succeeding) writes nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from app.adapters.n8n import ForwardResult, N8nClient
from app.domain.circuit import COOLDOWN_S, Circuit, admit, record
from app.store.base import CircuitRecords

log = logging.getLogger(__name__)

N8N_CIRCUIT = "n8n"
_CAS_ATTEMPTS = 8


class CircuitBreaker:
    def __init__(
        self,
        store: CircuitRecords,
        name: str,
        *,
        cooldown_s: float = COOLDOWN_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._name = name
        self._cooldown_s = cooldown_s
        self._clock = clock

    @property
    def cooldown_s(self) -> float:
        """Seconds an open circuit refuses before it lets one probe through."""
        return self._cooldown_s

    def state(self) -> Circuit:
        return self._store.get_circuit(self._name)

    def admit(self) -> bool:
        for _ in range(_CAS_ATTEMPTS):
            current = self._store.get_circuit(self._name)
            allowed, after = admit(current, self._clock(), cooldown_s=self._cooldown_s)
            if after == current or self._swap(current, after):
                return allowed
        return False

    def record(self, *, success: bool) -> Circuit:
        for _ in range(_CAS_ATTEMPTS):
            current = self._store.get_circuit(self._name)
            after = record(current, success=success, now=self._clock())
            if after == current or self._swap(current, after):
                if after.position != current.position:
                    log.warning(
                        "circuit %s: %s -> %s", self._name, current.position, after.position
                    )
                return after
        return self._store.get_circuit(self._name)

    def _swap(self, current: Circuit, after: Circuit) -> bool:
        return self._store.swap_circuit(self._name, expected_version=current.version, circuit=after)


@dataclass(frozen=True)
class Handover:
    """What became of a message meant for n8n."""

    accepted: bool
    reason: str  # forwarded | n8n_circuit_open | n8n_failed
    result: ForwardResult | None = None


class N8nForwarder:
    def __init__(self, client: N8nClient, breaker: CircuitBreaker) -> None:
        self._client = client
        self.breaker = breaker

    def hand_over(self, body: bytes, headers: Mapping[str, str]) -> Handover:
        """Admit through the breaker, then forward."""
        if not self.breaker.admit():
            return Handover(False, "n8n_circuit_open")
        return self.forward_admitted(body, headers)

    def forward_admitted(self, body: bytes, headers: Mapping[str, str]) -> Handover:
        """Forward a message the caller already admitted (admitting twice would take a
        half-open circuit's only probe slot and then refuse the probe itself)."""
        result = self._client.forward(body, headers)
        self.breaker.record(success=result.accepted)
        return Handover(result.accepted, "forwarded" if result.accepted else "n8n_failed", result)
