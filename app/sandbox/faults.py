"""Fault injection for the sandboxes: latency, errors, rate limits and hangs on demand.

Every sandbox owns one `Faults` holder. The service API routes consult it before doing any work, so
a test can make Chatwoot, the LLM or n8n slow or failing without touching the code under test. The
`/_sandbox/*` control routes never consult it: a test must always be able to switch faults off.
"""

from __future__ import annotations

import dataclasses
import random
import threading
from dataclasses import dataclass, fields
from typing import Any, Literal

FaultKind = Literal["error", "rate_limit", "timeout", "lost_response"]

_RATE_FIELDS = ("error_rate", "timeout_rate", "rate_limit_rate", "lost_response_rate")
_STATUS_FIELDS = ("error_status", "fail_next_status")


@dataclass
class FaultPlan:
    """What the next service requests should suffer.

    Rates are probabilities per request, drawn from one uniform number so that they partition
    `[0, 1)`: timeouts first, then rate limits, then errors. `fail_next` is deterministic and wins
    over the rates: the next N requests fail with `fail_next_status`. A 429 status, whichever field
    asks for it, is answered in the service's rate-limit shape.
    """

    latency_ms: float = 0
    error_rate: float = 0
    error_status: int = 500
    timeout_rate: float = 0
    hang_s: float = 30.0
    rate_limit_rate: float = 0
    fail_next: int = 0
    fail_next_status: int = 500
    # The request is served (its writes happen), then the answer is held for `hang_s`, as when
    # a connection drops after the server committed: the client times out on a success.
    lost_response_rate: float = 0
    seed: int | None = None

    def validate(self) -> None:
        """Raise ValueError naming the first field a caller set to something meaningless."""
        for name in _RATE_FIELDS:
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
        if sum(getattr(self, name) for name in _RATE_FIELDS) > 1:
            raise ValueError(f"{' + '.join(_RATE_FIELDS)} must not exceed 1")
        for name in _STATUS_FIELDS:
            value = getattr(self, name)
            if not 400 <= value <= 599:
                raise ValueError(f"{name} must be an HTTP error status (400-599), got {value!r}")
        if self.latency_ms < 0 or self.hang_s < 0:
            raise ValueError("latency_ms and hang_s must not be negative")
        if self.fail_next < 0:
            raise ValueError(f"fail_next must not be negative, got {self.fail_next!r}")


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "latency_ms": (int, float),
    "error_rate": (int, float),
    "error_status": (int,),
    "timeout_rate": (int, float),
    "hang_s": (int, float),
    "rate_limit_rate": (int, float),
    "fail_next": (int,),
    "fail_next_status": (int,),
    "lost_response_rate": (int, float),
    "seed": (int, type(None)),
}


@dataclass(frozen=True)
class Fault:
    """One injected failure: how the sandbox must answer instead of serving the request."""

    kind: FaultKind
    status: int
    hang_s: float = 0.0


class Faults:
    """Thread-safe holder of the current `FaultPlan`, shared by all request threads of a sandbox."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._plan = FaultPlan()
        self._rng = random.Random()
        # Hanging requests wait on this event, so reset() or a server stop releases them at once.
        self._wake = threading.Event()

    def plan(self) -> FaultPlan:
        """A copy of the current plan (fail_next shows what is left)."""
        with self._lock:
            return dataclasses.replace(self._plan)

    def set(self, **plan: Any) -> FaultPlan:
        """Replace the plan: fields not named take their defaults. ValueError for bad fields.

        Replacing (PUT semantics) means a call states the whole fault picture, so a leftover
        from an earlier call (say `fail_next_status=429`) never leaks into the next one.
        """
        known = {f.name for f in fields(FaultPlan)}
        unknown = sorted(set(plan) - known)
        if unknown:
            raise ValueError(f"unknown fault field(s) {unknown}; known fields: {sorted(known)}")
        for name, value in plan.items():
            if isinstance(value, bool) or not isinstance(value, _FIELD_TYPES[name]):
                raise ValueError(f"{name} has the wrong type: {value!r}")
        candidate = FaultPlan(**plan)
        candidate.validate()
        with self._lock:
            self._plan = candidate
            self._rng = random.Random(candidate.seed)
            return dataclasses.replace(candidate)

    def reset(self) -> None:
        """Back to a healthy service, releasing any request that is hanging right now."""
        with self._lock:
            self._plan = FaultPlan()
            self._rng = random.Random()
        self.release_hanging()

    def release_hanging(self) -> None:
        """Wake every request currently held by a timeout fault."""
        with self._lock:
            woken, self._wake = self._wake, threading.Event()
        woken.set()

    def latency_s(self) -> float:
        """The delay to add before serving a service request."""
        with self._lock:
            return self._plan.latency_ms / 1000

    def decide(self) -> Fault | None:
        """Draw the fate of one service request: None to serve it normally."""
        with self._lock:
            plan = self._plan
            if plan.fail_next > 0:
                plan.fail_next -= 1
                return _status_fault(plan.fail_next_status)
            draw = self._rng.random()
            if draw < plan.timeout_rate:
                return Fault(kind="timeout", status=500, hang_s=plan.hang_s)
            if draw < plan.timeout_rate + plan.rate_limit_rate:
                return Fault(kind="rate_limit", status=429)
            if draw < plan.timeout_rate + plan.rate_limit_rate + plan.error_rate:
                return _status_fault(plan.error_status)
            if (
                draw
                < plan.timeout_rate
                + plan.rate_limit_rate
                + plan.error_rate
                + plan.lost_response_rate
            ):
                return Fault(kind="lost_response", status=200, hang_s=plan.hang_s)
            return None

    def hang(self, fault: Fault) -> None:
        """Hold the calling request thread for the fault's duration, or until released."""
        with self._lock:
            wake = self._wake
        wake.wait(fault.hang_s)


def _status_fault(status: int) -> Fault:
    return Fault(kind="rate_limit" if status == 429 else "error", status=status)
