"""Rollout: which system answers a conversation, and the rules for changing that.

A conversation's route is a hash of its id (docs/migration.md, How routing works), so it never
bounces between n8n and the new pipeline mid-conversation, and raising the percentage only ever
moves conversations from n8n to the new pipeline, never back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum

import mmh3

BUCKET_PREFIX = "reply-pipeline:"
# The audit keeps a reason per change; longer than this is a paste accident, not a reason.
MAX_REASON_CHARS = 500
# An operator's name as the admin API's caller gives it; the audit prefixes it with "admin-api:".
MAX_ACTOR_CHARS = 80


class Route(StrEnum):
    NEW = "new"  # the Huey reply pipeline
    N8N = "n8n"  # the legacy n8n workflow


def bucket(conversation_id: int) -> int:
    """1..100, stable for a conversation: murmur3_32("reply-pipeline:<id>", seed 0) % 100 + 1."""
    return mmh3.hash(f"{BUCKET_PREFIX}{conversation_id}", seed=0, signed=False) % 100 + 1


@dataclass(frozen=True)
class GuardThresholds:
    """When the new pipeline is failing badly enough to roll back by itself."""

    enabled: bool = True
    max_failure_rate: float = 0.05  # failed / finished replies
    max_fallback_rate: float = 0.25  # template fallbacks / sent replies
    max_p95_latency_s: float = 20.0  # customer message to reply
    window_s: float = 600.0
    min_sample: int = 20


@dataclass(frozen=True)
class RolloutState:
    percentage: int = 0
    shadow: bool = False
    n8n_enabled: bool = True
    queue_paused: bool = False
    guard: GuardThresholds = GuardThresholds()
    updated_at: float = 0.0
    updated_by: str = "environment"

    def route_for(self, conversation_id: int, *, n8n_configured: bool) -> Route:
        if not n8n_configured or not self.n8n_enabled:
            return Route.NEW
        return Route.NEW if bucket(conversation_id) <= self.percentage else Route.N8N

    def shadows(self, route: Route, *, n8n_configured: bool) -> bool:
        """Whether a message answered by n8n also runs, without side effects, in the new
        pipeline for comparison."""
        return self.shadow and n8n_configured and route is Route.N8N


class RolloutError(ValueError):
    """A requested rollout change is not allowed; the message says why and what to do."""


@dataclass(frozen=True)
class RolloutChange:
    percentage: int | None = None
    shadow: bool | None = None
    n8n_enabled: bool | None = None
    guard: GuardThresholds | None = None


def apply_change(current: RolloutState, change: RolloutChange) -> RolloutState:
    """The state after `change`, or RolloutError if it breaks a rule."""
    percentage = current.percentage if change.percentage is None else change.percentage
    if not 0 <= percentage <= 100:
        raise RolloutError("percentage must be between 0 and 100")
    n8n_enabled = current.n8n_enabled if change.n8n_enabled is None else change.n8n_enabled
    if not n8n_enabled and percentage < 100:
        raise RolloutError(
            "n8n can only be disabled at 100 %: below that n8n still answers "
            f"{100 - percentage} % of conversations; raise the percentage to 100 first"
        )
    guard = current.guard if change.guard is None else change.guard
    _check_guard(guard)
    return replace(
        current,
        percentage=percentage,
        shadow=current.shadow if change.shadow is None else change.shadow,
        n8n_enabled=n8n_enabled,
        guard=guard,
    )


# Each threshold's allowed range, inclusive (the console's inputs use the same). Outside them a
# guard would never fire (a NaN, Infinity or 1e300 compares false with everything) or fire at
# once; neither is a setting anyone means.
GUARD_RANGES: dict[str, tuple[float, float]] = {
    "max_failure_rate": (0.001, 1.0),
    "max_fallback_rate": (0.001, 1.0),
    "max_p95_latency_s": (1.0, 600.0),
    "window_s": (60.0, 86_400.0),
    "min_sample": (1, 10_000),
}


def guard_value_error(name: str, value: object) -> str | None:
    """Why `value` cannot be guard threshold `name`, or None."""
    low, high = GUARD_RANGES[name]
    whole = name == "min_sample"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "must be a number"
    if not math.isfinite(value) or not low <= value <= high:
        return f"must be {'a whole number' if whole else 'a number'} from {low:g} to {high:g}"
    if whole and not float(value).is_integer():
        return f"must be a whole number from {low:g} to {high:g}"
    return None


def _check_guard(guard: GuardThresholds) -> None:
    for name in GUARD_RANGES:
        error = guard_value_error(name, getattr(guard, name))
        if error is not None:
            raise RolloutError(f"guard.{name} {error}, not {getattr(guard, name)!r}")


def describe(state: RolloutState, *, n8n_configured: bool) -> str:
    """One sentence on what the state means for customers (the plan's migration description)."""
    if not n8n_configured:
        return "No n8n workflow is configured: the new pipeline answers every conversation."
    if state.percentage == 0:
        if state.shadow:
            return (
                "Shadow mode: n8n answers every conversation; the new pipeline writes replies "
                "for comparison and sends nothing."
            )
        return "n8n answers every conversation; the new pipeline answers none."
    if state.percentage < 50:
        return f"Gradual rollout: the new pipeline answers {state.percentage} % of conversations."
    if state.percentage < 100:
        return f"Majority on the new pipeline: {state.percentage} % of conversations."
    if state.n8n_enabled:
        return "100 % on the new pipeline; n8n stays enabled as the rollback path."
    return "Cut-over complete: n8n is disabled and can be decommissioned."
