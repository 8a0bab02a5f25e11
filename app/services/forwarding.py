"""Handing customer messages to n8n: the circuit breaker and the forward itself.

The breaker's state lives in the store so every receiver process sees the same circuit; each
transition is a compare-and-set, and the common case (closed, succeeding) writes nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from app.domain.circuit import COOLDOWN_S, Circuit, admit, record
from app.domain.jobs import ReplyJob
from app.ports.n8n import ForwardResult, N8nWorkflow
from app.store.base import CircuitRecords, JobLedger, RuntimeState

log = logging.getLogger(__name__)

N8N_CIRCUIT = "n8n"
_CAS_ATTEMPTS = 8
N8N_WATCHDOG_COUNTER = "n8n_watchdog"
# Forwards older than the reply timeout by more than this are not watched: the column that
# marks n8n's replies is newer than them, and a customer's week-old message is not news.
WATCH_HORIZON_S = 900.0
ALERT_EVERY_S = 300.0


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
    def __init__(self, client: N8nWorkflow, breaker: CircuitBreaker) -> None:
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


class PrepareQueue(Protocol):
    def enqueue_prepare(self, job_id: str, *, at: float | None = None) -> None: ...


class Notifier(Protocol):
    def alert(self, level: str, title: str, message: str) -> bool: ...


class WatchdogStore(JobLedger, RuntimeState, Protocol):
    """What the watchdog reads and writes: the ledger, and a counter."""


class N8nWatchdog:
    """n8n took a message and then said nothing (a workflow error, a disabled Chatwoot node, an
    expired credential): after `silent_after_s` the new pipeline answers it. Each such message
    counts as a failed forward in n8n's circuit, so a workflow that stays silent has its share
    taken over as if n8n were down, and an alert says so (at most every ALERT_EVERY_S)."""

    def __init__(
        self,
        store: WatchdogStore,
        queue: PrepareQueue,
        breaker: CircuitBreaker,
        notifier: Notifier,
        *,
        silent_after_s: float,
    ) -> None:
        self._store = store
        self._queue = queue
        self._breaker = breaker
        self._notifier = notifier
        self._silent_after_s = silent_after_s
        self._last_alert = 0.0

    def check(self, now: float) -> list[ReplyJob]:
        silent = self._store.requeue_silent_forwards(
            now=now, silent_after_s=self._silent_after_s, horizon_s=WATCH_HORIZON_S
        )
        if not silent:
            return silent
        for job in silent:
            self._queue.enqueue_prepare(job.id)
            self._breaker.record(success=False)
        self._store.count(N8N_WATCHDOG_COUNTER, "silent", len(silent))
        message = (
            f"{len(silent)} message(s) forwarded to n8n got no reply within "
            f"{self._silent_after_s:g} s; the new pipeline answers them. Check the n8n workflow's "
            "executions (its Chatwoot node and credentials)."
        )
        log.warning("n8n silent: %s", message)
        if now - self._last_alert >= ALERT_EVERY_S:
            self._last_alert = now
            self._notifier.alert("warning", "n8n is not answering", message)
        return silent
