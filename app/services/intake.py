"""Webhook intake: classify a Chatwoot event, route it, record it, hand it on.

No call to Chatwoot or OpenAI happens here (Chatwoot waits 5 s, then gives up or hands the
conversation to humans). One durable write is the commitment:
- with Redis (`REDIS_URL`), a customer message for the new pipeline is pushed onto the intake
  buffer (app/adapters/redis_intake.py: dedupe and push in one Lua call); a worker records it in
  the ledger moments later (`admit_buffered`). If Redis cannot take it, the ledger write below is
  the commitment instead, so a Redis outage costs speed, never a message;
- otherwise the ledger write is: one store call records the message, assigns its broker,
  holds the broker's capacity and schedules the reply (`admit_inbound`); once it returns, the
  message will be answered even if the enqueue fails, because the reaper re-enqueues stale
  jobs.

Routing (docs/migration.md, How routing works): a conversation's bucket decides n8n or the new
pipeline. A message for n8n is forwarded from here, with a short timeout behind a circuit
breaker — it needs neither Redis nor a worker, so rollback works when they are down. When n8n
cannot take it, the new pipeline answers instead and the ledger says why.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from app.domain.events import (
    EventAction,
    EventDecision,
    InboundMessage,
    Sender,
    classify_event,
    foreign_reply_text,
    sender_of,
)
from app.domain.forwarding import forwarded_headers
from app.domain.intake_entry import BufferedInbound, PushOutcome
from app.domain.jobs import JobState, ReplyJob
from app.domain.reply_plan import ReplyPlanner
from app.domain.rollout import Route
from app.ports import JobQueue
from app.ports.intake_buffer import IntakeBuffer, IntakeBufferError
from app.services.counters import BufferedCounters
from app.services.forwarding import N8nForwarder
from app.services.rollout import RolloutService
from app.store.base import Store
from app.store.models import ConversationStatus, InboundStatus

log = logging.getLogger(__name__)

WEBHOOK_COUNTER = "webhooks"


@dataclass(frozen=True)
class IntakeResult:
    status: str  # accepted | ignored | duplicate
    reason: str
    job_id: str | None = None
    route: str | None = None


class WebhookIntake:
    def __init__(
        self,
        store: Store,
        queue: JobQueue,
        rollout: RolloutService,
        forwarder: N8nForwarder | None,
        counters: BufferedCounters,
        *,
        planner: ReplyPlanner,
        buffer: IntakeBuffer | None = None,
        n8n_sender: Sender | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._counters = counters
        self._n8n_sender = n8n_sender
        self._planner = planner
        self._buffer = buffer
        self._store = store
        self._queue = queue
        self._rollout = rollout
        self._forwarder = forwarder
        self._clock = clock

    def accept(
        self,
        payload: Mapping[str, object],
        *,
        raw: bytes,
        headers: Mapping[str, str],
        delivery_id: str | None,
    ) -> IntakeResult:
        """Raises PayloadError for a malformed event we would act on, StoreError if not recorded."""
        decision = classify_event(payload)
        result = self._dispatch(decision, payload, raw, headers, delivery_id)
        self._counters.count(WEBHOOK_COUNTER, f"{result.status}:{result.reason}")
        return result

    def _dispatch(
        self,
        decision: EventDecision,
        payload: Mapping[str, object],
        raw: bytes,
        headers: Mapping[str, str],
        delivery_id: str | None,
    ) -> IntakeResult:
        conversation_id = decision.conversation_id
        if conversation_id is not None and self._forwarder is not None:
            reply = foreign_reply_text(payload)
            if reply is not None and self._from_n8n(payload, conversation_id):
                return self._n8n_replied(conversation_id, reply, payload)
        if decision.action is EventAction.IGNORE:
            return IntakeResult("ignored", decision.reason)
        if decision.action is EventAction.HUMAN_TAKEOVER:
            assert conversation_id is not None
            skipped = self._store.set_conversation_status(
                conversation_id, ConversationStatus.HUMAN, decision.reason, now=self._clock()
            )
            if skipped:
                log.info(
                    "conversation=%s taken by a human (%s); %d unsent replies cancelled",
                    conversation_id,
                    decision.reason,
                    len(skipped),
                )
            return IntakeResult("accepted", decision.reason)
        assert decision.message is not None
        if self._rollout.route_for(decision.message.conversation_id) is Route.N8N:
            return self._to_n8n(decision.message, raw, headers, delivery_id)
        if self._buffer is not None:
            return self._to_buffer(decision.message, raw, headers, delivery_id)
        return self._to_pipeline(decision.message, raw, headers, delivery_id, reason=None)

    def _from_n8n(self, payload: Mapping[str, object], conversation_id: int) -> bool:
        """Whether a message we did not send is n8n's reply. With N8N_SENDER, by who sent it:
        any other agent is a human taking over, and a rollout change racing the message (a
        receiver still on its cached percentage) cannot mistake one for the other. Without
        it, by the conversation's route, which is all there is to go on."""
        if self._n8n_sender is not None:
            return sender_of(payload) == self._n8n_sender
        return self._rollout.route_for(conversation_id) is Route.N8N

    def admit_buffered(self, entry: BufferedInbound) -> IntakeResult:
        """Record a message a receiver buffered. The route is decided again: after a rollback
        the message belongs to n8n, like every other unsent one."""
        raw = entry.payload
        message = entry.message
        if self._forwarder is not None and (
            self._rollout.route_for(message.conversation_id) is Route.N8N
        ):
            return self._to_n8n(message, raw, entry.headers, entry.delivery_id)
        return self._to_pipeline(
            message,
            raw,
            entry.headers,
            entry.delivery_id,
            reason=None,
            received_at=entry.received_at,
        )

    def _to_buffer(
        self,
        message: InboundMessage,
        raw: bytes,
        headers: Mapping[str, str],
        delivery_id: str | None,
    ) -> IntakeResult:
        assert self._buffer is not None
        entry = BufferedInbound(
            message=message,
            delivery_id=delivery_id,
            received_at=self._clock(),
            payload=raw,
            headers=forwarded_headers(headers),
        )
        try:
            outcome = self._buffer.push(entry)
        except IntakeBufferError as exc:
            log.warning("intake buffer unavailable (%s); recording in the ledger", exc)
            return self._to_pipeline(message, raw, headers, delivery_id, reason=None)
        if outcome is PushOutcome.ACCEPTED:
            return IntakeResult("accepted", "customer_message", route=Route.NEW)
        return IntakeResult("duplicate", outcome.value)

    def _to_pipeline(
        self,
        message: InboundMessage,
        raw: bytes,
        headers: Mapping[str, str],
        delivery_id: str | None,
        reason: str | None,
        *,
        received_at: float | None = None,
    ) -> IntakeResult:
        # Recorded, assigned and scheduled in one store call: the worker only answers it.
        outcome = self._store.admit_inbound(
            message,
            delivery_id=delivery_id,
            now=received_at if received_at is not None else self._clock(),
            plan=self._planner.for_message(message.content or ""),
            route_reason=reason,
            payload=raw.decode("utf-8", errors="replace"),
            headers=forwarded_headers(headers),
        )
        if outcome.status is InboundStatus.RECORDED and outcome.job is not None:
            self._hand_on(outcome.job)
            return IntakeResult("accepted", reason or outcome.reason, outcome.job.id, Route.NEW)
        if outcome.status is InboundStatus.DUPLICATE:
            return IntakeResult("duplicate", outcome.reason)
        return IntakeResult("ignored", outcome.reason)

    def _to_n8n(
        self,
        message: InboundMessage,
        raw: bytes,
        headers: Mapping[str, str],
        delivery_id: str | None,
    ) -> IntakeResult:
        assert self._forwarder is not None
        if not self._forwarder.breaker.admit():
            # n8n is known to be down: do not make the customer wait for another timeout.
            return self._to_pipeline(message, raw, headers, delivery_id, reason="n8n_circuit_open")
        outcome = self._store.record_inbound(
            message,
            delivery_id=delivery_id,
            now=self._clock(),
            route=Route.N8N,
            payload=raw.decode("utf-8", errors="replace"),
            headers=forwarded_headers(headers),
        )
        if outcome.status is InboundStatus.DUPLICATE:
            return IntakeResult("duplicate", outcome.reason)
        if outcome.status is not InboundStatus.RECORDED or outcome.job is None:
            return IntakeResult("ignored", outcome.reason)
        job = outcome.job
        shadow = None
        if self._rollout.current().shadows(Route.N8N, n8n_configured=True):
            # Before the forward: n8n may post its reply (and Chatwoot echo it to us) before
            # the forward returns, and the comparison row must be there to receive it.
            shadow = self._store.create_shadow(message, now=self._clock())
            if shadow is not None:
                self._enqueue(shadow.id)
        handover = self._forwarder.forward_admitted(raw, headers)
        now = self._clock()
        if handover.accepted:
            # n8n's reply arrives as its own message in Chatwoot (`_n8n_replied`).
            self._store.forward_outcome(job.id, accepted=True, reason="bucket", now=now)
            return IntakeResult("accepted", "forwarded_to_n8n", job.id, Route.N8N)
        if shadow is not None:
            self._store.cancel_job(
                shadow.id, reason="n8n did not answer: nothing to compare", now=now
            )
        requeued = self._store.forward_outcome(
            job.id, accepted=False, reason=handover.reason, now=now
        )
        if requeued is not None:
            self._enqueue(requeued.id)
        log.warning(
            "conversation=%s: %s; the new pipeline answers",
            message.conversation_id,
            handover.reason,
        )
        return IntakeResult("accepted", handover.reason, job.id, Route.NEW)

    def _n8n_replied(
        self, conversation_id: int, reply: str, payload: Mapping[str, object]
    ) -> IntakeResult:
        at = _created_at(payload.get("created_at")) or self._clock()
        # Answered: the watchdog leaves these messages to n8n (N8N_REPLY_TIMEOUT_S).
        answered = self._store.mark_n8n_answered(conversation_id, at=at)
        paired = self._store.record_n8n_reply(
            conversation_id, reply=reply, at=at, source="message_event"
        )
        return IntakeResult("accepted" if paired or answered else "ignored", "n8n_reply")

    def _hand_on(self, job: ReplyJob) -> None:
        """A scheduled reply to the worker for when its delay is over; a job still queued (its
        broker is full) to the worker's prepare, which retries; a skipped one to nobody."""
        if job.state is JobState.WAITING:
            due = job.due_at if job.due_at is not None and job.due_at > self._clock() else None
            self._enqueue(job.id, respond_at=due, respond=True)
        elif job.state is JobState.QUEUED:
            self._enqueue(job.id)

    def _enqueue(
        self, job_id: str, *, respond: bool = False, respond_at: float | None = None
    ) -> None:
        try:
            if respond:
                self._queue.enqueue_respond(job_id, at=respond_at)
            else:
                self._queue.enqueue_prepare(job_id)
        except Exception:
            log.exception("job=%s recorded but not enqueued; the reaper will pick it up", job_id)


def _created_at(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
