"""Webhook intake: classify a Chatwoot event, record it in the ledger, hand it to a worker.

No call to Chatwoot or OpenAI happens here (Chatwoot waits 5 s, then gives up or hands the
conversation to humans). The ledger write is the commitment: once it returns, the message will
be answered even if the enqueue below fails, because the reaper re-enqueues stale queued jobs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from app.domain.events import EventAction, classify_event
from app.store.base import Store
from app.store.models import ConversationStatus, InboundStatus
from tasks.queue import JobQueue

log = logging.getLogger(__name__)

WEBHOOK_COUNTER = "webhooks"


@dataclass(frozen=True)
class IntakeResult:
    status: str  # accepted | ignored | duplicate
    reason: str
    job_id: str | None = None


class WebhookIntake:
    def __init__(
        self, store: Store, queue: JobQueue, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._queue = queue
        self._clock = clock

    def accept(self, payload: Mapping[str, object], *, delivery_id: str | None) -> IntakeResult:
        """Raises PayloadError for a malformed event we would act on, StoreError if not recorded."""
        decision = classify_event(payload)
        now = self._clock()
        if decision.action is EventAction.IGNORE:
            result = IntakeResult("ignored", decision.reason)
        elif decision.action is EventAction.HUMAN_TAKEOVER:
            assert decision.conversation_id is not None
            skipped = self._store.set_conversation_status(
                decision.conversation_id, ConversationStatus.HUMAN, decision.reason, now=now
            )
            if skipped:
                log.info(
                    "conversation=%s taken by a human (%s); %d unsent replies cancelled",
                    decision.conversation_id,
                    decision.reason,
                    len(skipped),
                )
            result = IntakeResult("accepted", decision.reason)
        else:
            assert decision.message is not None
            outcome = self._store.record_inbound(decision.message, delivery_id=delivery_id, now=now)
            if outcome.status is InboundStatus.RECORDED and outcome.job is not None:
                self._enqueue(outcome.job.id)
                result = IntakeResult("accepted", outcome.reason, outcome.job.id)
            elif outcome.status is InboundStatus.DUPLICATE:
                result = IntakeResult("duplicate", outcome.reason)
            else:
                result = IntakeResult("ignored", outcome.reason)
        self._store.count(WEBHOOK_COUNTER, f"{result.status}:{result.reason}")
        return result

    def _enqueue(self, job_id: str) -> None:
        try:
            self._queue.enqueue_prepare(job_id)
        except Exception:
            log.exception("job=%s recorded but not enqueued; the reaper will pick it up", job_id)
