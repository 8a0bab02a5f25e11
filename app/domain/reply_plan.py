"""The plan for answering one message, made before the store knows which broker answers it.

Personas pace themselves differently, so the human-like delay depends on the broker, and the
broker is only known inside the store's transaction that assigns it (app/store: admit_inbound,
schedule_job). So the plan carries every broker's delay, and the store picks the one that
applies: recording, assignment, capacity and scheduling stay one transaction.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from app.domain.personas import PERSONAS, BrokerPersona
from app.domain.urgency import analyze_message_urgency


@dataclass(frozen=True)
class ReplyPlan:
    delay_s_by_broker: Mapping[str, float]
    escalation_reason: str | None = None  # an EscalationReason value: the reply hands off

    def delay_for(self, broker_id: str) -> float:
        """A broker the plan does not name (added since) takes the longest delay."""
        if broker_id in self.delay_s_by_broker:
            return self.delay_s_by_broker[broker_id]
        return max(self.delay_s_by_broker.values(), default=0.0)

    def to_json(self) -> dict[str, float]:
        return dict(self.delay_s_by_broker)


class ReplyPlanner:
    """Plans with the operator's delay scale (RESPONSE_DELAY_SCALE) and one random jitter per
    message, the same for every persona (the rng is injected so tests can fix it)."""

    def __init__(
        self,
        *,
        scale: float,
        greeting_delay_s: float = 1.0,
        personas: Sequence[BrokerPersona] = PERSONAS,
        rng: random.Random | None = None,
    ) -> None:
        self._scale = scale
        self._greeting_delay_s = greeting_delay_s
        self._personas = tuple(personas)
        self._rng = rng or random.Random()

    def for_message(self, content: str) -> ReplyPlan:
        jitter = self._rng.random()
        analyses = {
            persona.slug: analyze_message_urgency(
                content, persona, scale=self._scale, jitter=jitter
            )
            for persona in self._personas
        }
        reason = next(iter(analyses.values())).escalate_reason if analyses else None
        return ReplyPlan(
            {slug: analysis.response_delay_s for slug, analysis in analyses.items()},
            reason.value if reason is not None else None,
        )

    def for_greeting(self) -> ReplyPlan:
        delay = self._greeting_delay_s * self._scale
        return ReplyPlan({persona.slug: delay for persona in self._personas})
