"""The reply pipeline a worker runs for each ledger job.

prepare: assign a broker (if the conversation has none), hold capacity, decide the human-like
         delay and whether to escalate, then schedule `respond` for when the delay is over.
respond: claim the job (merging a burst of messages into one reply), check the conversation is
         still the bot's, generate (or pick the greeting / handoff text), send once, hand off when
         needed, record metrics and release capacity. Failures retry with backoff; after the last
         attempt the customer gets an apology and a human.

Every Chatwoot write is idempotent across retries and re-runs (see `_post_once`).
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from app.domain.chatwoot import ChatMessage, RemoteConversation
from app.domain.events import JOB_MARKER_KEY
from app.domain.history import answered_after, history_from_messages
from app.domain.jobs import (
    MAX_ATTEMPTS,
    MAX_HANDOFF_ATTEMPTS,
    JobKind,
    JobState,
    ReplyJob,
    retry_delay_s,
)
from app.domain.lead import LeadProfile
from app.domain.personas import (
    PERSONAS,
    BrokerPersona,
    failure_apology,
    fallback_reply,
    greeting_for,
    handoff_message,
    persona_by_slug,
)
from app.domain.prompt import build_system_prompt
from app.domain.reply_plan import ReplyPlanner
from app.domain.rollout import bucket
from app.domain.urgency import EscalationReason, escalation_reason
from app.ports import JobQueue
from app.ports.chatwoot import ChatwootError, Conversations
from app.ports.replies import GeneratedReply, ReplyGenerator
from app.services.lease import LeaseKeeper
from app.services.rollout import RolloutService
from app.store.base import Store, StoreError
from app.store.models import (
    NOT_DUE,
    BrokerConversation,
    ClaimStatus,
    ConversationStatus,
    SendGate,
)

log = logging.getLogger(__name__)

HANDOFF_STATUS = "handoff_requested"
# A job not due on the store's clock but due on this host's comes back this much later.
SKEWED_CLOCK_RETRY_S = 0.5


@dataclass(frozen=True)
class PipelineSettings:
    response_delay_scale: float = 1.0
    greeting_delay_s: float = 1.0
    lease_s: float = 30.0
    coalesce_window_s: float = 20.0
    capacity_retry_s: float = 2.0
    send_rate_per_s: float = 10.0


class LeaseLost(Exception):
    """The job is no longer ours (cancelled, or reaped after our lease expired)."""


class ConversationTaken(Exception):
    """A human has the conversation now; the store has skipped the job."""


class ReplyPipeline:
    def __init__(
        self,
        *,
        store: Store,
        chatwoot: Conversations,
        generator: ReplyGenerator,
        queue: JobQueue,
        rollout: RolloutService,
        settings: PipelineSettings,
        worker_id: str,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._chatwoot = chatwoot
        self._generator = generator
        self._queue = queue
        self._rollout = rollout
        self._settings = settings
        self._worker_id = worker_id
        self._clock = clock
        self._sleep = sleep
        self._planner = ReplyPlanner(
            scale=settings.response_delay_scale,
            greeting_delay_s=settings.greeting_delay_s,
            rng=rng,
        )
        # When each job this process is running last took or renewed its lease (by job id).
        self._lease_taken_at: dict[str, float] = {}

    # -- prepare -----------------------------------------------------------------------------
    def prepare(self, job_id: str) -> None:
        """For a job the receiver could not schedule at once: its broker was full, n8n gave it
        back, a greeting, or the reaper found it queued."""
        job = self._store.get_job(job_id)
        if job is None or job.state is not JobState.QUEUED:
            return
        now = self._clock()
        if self._paused():
            return
        if job.kind is JobKind.SHADOW:
            self._prepare_shadow(job, now)
            return
        plan = (
            self._planner.for_greeting()
            if job.kind is JobKind.GREETING
            else self._planner.for_message(job.inbound_content or "")
        )
        scheduled = self._store.schedule_job(job.id, plan=plan, now=now)
        if scheduled is None or scheduled.state is JobState.SKIPPED:
            return
        if scheduled.state is JobState.QUEUED:
            log.info("job=%s broker at capacity; retrying", job.id)
            self._queue.enqueue_prepare(job.id, at=now + self._settings.capacity_retry_s)
            return
        log.info(
            "job=%s conversation=%s delay=%.2fs", job.id, job.conversation_id, scheduled.delay_s
        )
        if scheduled.due_at is None or scheduled.due_at <= now:
            self.respond(job.id)
        else:
            self._queue.enqueue_respond(job.id, at=scheduled.due_at)

    def _prepare_shadow(self, job: ReplyJob, now: float) -> None:
        """Shadow replies skip the human-like delay and hold no capacity: nobody waits for them
        and they must not change what the live brokers can take."""
        conversation = self._store.get_conversation(job.conversation_id)
        broker_id = conversation.broker_id if conversation else _shadow_persona(job).slug
        if self._store.prepare_job(
            job.id, broker_id=broker_id, delay_s=0.0, escalation_reason=None, now=now
        ):
            self.respond(job.id)

    def _paused(self) -> bool:
        """While paused, tasks are dropped unrun: the job waits in the ledger, and resume (or
        the reaper, for a resume it missed) enqueues it again. Re-scheduling here instead
        would add a task per job at every reaper pass."""
        return self._rollout.current().queue_paused

    # -- respond -----------------------------------------------------------------------------
    def respond(self, job_id: str) -> None:
        now = self._clock()
        claim = self._store.claim_job(
            job_id,
            owner=self._worker_id,
            lease_s=self._settings.lease_s,
            coalesce_window_s=self._settings.coalesce_window_s,
            now=now,
        )
        if claim.status is ClaimStatus.DEFERRED:
            log.info("job=%s merged into a newer message of the burst", job_id)
        if claim.reason == NOT_DUE and claim.job is not None:
            # Early (a duplicate task, a clock step): come back when the delay is over. A due
            # time already past on this host's clock but not on the database's (PostgreSQL
            # judges leases on its own clock) would come back at once, again and again.
            due_at = claim.job.due_at
            self._queue.enqueue_respond(
                job_id,
                at=due_at if due_at is not None and due_at > now else now + SKEWED_CLOCK_RETRY_S,
            )
            return
        if claim.status is not ClaimStatus.CLAIMED or claim.job is None:
            return
        job = claim.job
        self._lease_taken_at[job.id] = now
        try:
            with LeaseKeeper(job.id, lambda: self._renewed(job), interval_s=self._renew_every_s):
                self._run_claimed(job, claim.batch, claim.conversation)
        finally:
            self._lease_taken_at.pop(job.id, None)

    def _run_claimed(
        self,
        job: ReplyJob,
        batch: Sequence[ReplyJob],
        conversation: BrokerConversation | None,
    ) -> None:
        try:
            if job.kind is JobKind.SHADOW:
                self._answer_shadow(job)
            elif job.attempts > MAX_ATTEMPTS:
                # The reply attempts are spent; an earlier apology did not get through yet.
                self._give_up(job, job.error or "earlier attempts failed", None)
            else:
                self._answer(job, batch, conversation or self._conversation(job))
        except ConversationTaken as taken:
            log.info("job=%s skipped: %s took the conversation meanwhile", job.id, taken)
        except LeaseLost:
            log.warning("job=%s lease lost; another worker or an operator has it", job.id)
        except ChatwootError as exc:
            self._after_failure(job, exc, retryable=exc.retryable, retry_after=exc.retry_after)
        except Exception as exc:  # noqa: BLE001 - any bug or outage: retry, then hand off
            self._after_failure(job, exc, retryable=True, retry_after=None)

    def _answer_shadow(self, job: ReplyJob) -> None:
        """Write the reply the new pipeline would have sent, and only record it: no Chatwoot
        write, no assignment, no capacity (docs/architecture.md, Decisions 10)."""
        assert job.comparison_id is not None and job.broker_id is not None
        persona = persona_by_slug(job.broker_id)
        conversation = self._store.get_conversation(job.conversation_id)
        history = history_from_messages(self._chatwoot.list_messages(job.conversation_id))
        lead = (
            LeadProfile.from_dict(conversation.lead_profile)
            if conversation and conversation.lead_profile
            else None
        )
        escalation = escalation_reason(job.inbound_content or "")
        if escalation is not None:
            text, used_fallback = handoff_message(persona, escalation), False
        else:
            generated = self._generator.generate(
                system_prompt=build_system_prompt(persona, lead),
                history=history,
                customer_messages=[job.inbound_content] if job.inbound_content else [],
                fallback_text=fallback_reply(persona),
            )
            text, used_fallback = generated.text, generated.used_fallback
        self._store.record_shadow_reply(
            job.comparison_id,
            reply=text,
            latency_ms=(self._clock() - job.received_at) * 1000,
            used_fallback=used_fallback,
            broker_id=persona.slug,
        )
        self._finish(job, JobState.RECORDED, reply_text=text, used_fallback=used_fallback)
        log.info("shadow job=%s conversation=%s recorded", job.id, job.conversation_id)

    def _answer(
        self, job: ReplyJob, batch: Sequence[ReplyJob], conversation: BrokerConversation
    ) -> None:
        persona = persona_by_slug(conversation.broker_id)
        remote = self._chatwoot.get_conversation(job.conversation_id)
        takeover = _human_takeover_reason(remote)
        if conversation.status is not ConversationStatus.BOT or takeover:
            reason = takeover or f"conversation {conversation.status.value}"
            if takeover:
                self._store.set_conversation_status(
                    job.conversation_id, ConversationStatus.HUMAN, takeover, now=self._clock()
                )
            self._finish(job, JobState.SKIPPED, error=reason)
            return

        escalation = _escalation(batch)
        used_fallback, fallback_reason = False, None
        messages: list[ChatMessage] = []
        if job.kind is JobKind.REPLY:
            messages = self._chatwoot.list_messages(job.conversation_id)
            newest_inbound = max(j.inbound_message_id or 0 for j in batch)
            # Only a message n8n may have had (a failed or unconfirmed forward) can have been
            # answered already; elsewhere an unmarked reply is a human's or an automation's.
            n8n_touched = any(j.route_reason for j in batch)
            if n8n_touched and answered_after(messages, newest_inbound):
                self._finish(job, JobState.SKIPPED, error="answered_elsewhere")
                return
        if job.kind is JobKind.GREETING:
            text = greeting_for(persona, _customer_name(remote, conversation))
        elif escalation is not None:
            text = handoff_message(persona, escalation)
        else:
            generated = self._generate(job, batch, persona, conversation, messages)
            text = generated.text
            used_fallback, fallback_reason = generated.used_fallback, generated.fallback_reason

        self._renew(job)
        # The last check (a human may have taken over while we were writing) and the send
        # slot come with the send stamp, in _post_once.
        message_id = self._post_once(job, text, marker=job.id, private=False)
        if escalation is not None:
            self._hand_off(job, persona, escalation.value)
        state = JobState.HANDED_OFF if escalation is not None else JobState.SENT
        if not self._store.complete_job(
            job.id,
            owner=self._worker_id,
            state=state,
            now=self._clock(),
            broker_id=conversation.broker_id,
            customer_messages=sum(1 for j in batch if j.kind is JobKind.REPLY),
            handoff_reason=escalation.value if escalation else None,
            reply_text=text,
            reply_message_id=message_id,
            used_fallback=used_fallback,
            fallback_reason=fallback_reason,
        ):
            raise LeaseLost(job.id)
        log.info(
            "job=%s conversation=%s %s batch=%d fallback=%s",
            job.id,
            job.conversation_id,
            state.value,
            len(batch),
            used_fallback,
        )

    def _generate(
        self,
        job: ReplyJob,
        batch: Sequence[ReplyJob],
        persona: BrokerPersona,
        conversation: BrokerConversation,
        messages: Sequence[ChatMessage],
    ) -> GeneratedReply:
        history = history_from_messages(messages)
        lead = (
            LeadProfile.from_dict(conversation.lead_profile) if conversation.lead_profile else None
        )
        self._renew(job)
        return self._generator.generate(
            system_prompt=build_system_prompt(persona, lead),
            history=history,
            customer_messages=[j.inbound_content for j in batch if j.inbound_content],
            fallback_text=fallback_reply(persona),
        )

    # -- Chatwoot writes, each once ------------------------------------------------------------
    def _post_once(self, job: ReplyJob, text: str, *, marker: str, private: bool) -> int:
        """Post a message carrying `marker`, unless an earlier attempt already did.

        A reply goes through `start_send`, which stamps the job before the first POST; if a
        later run finds the stamp, the earlier POST may have reached Chatwoot even though we
        never saw its answer, so we look for the marker before posting again. A private note
        (the handoff's) follows a reply this run has just stamped, so it skips the store and
        always looks for its marker.
        """
        if private:
            earlier_attempt = True
        else:
            before = self._start_send(job)
            earlier_attempt = before.send_started_at is not None
        if earlier_attempt:
            existing = self._chatwoot.find_message_with_marker(
                job.conversation_id, JOB_MARKER_KEY, marker
            )
            if existing is not None:
                log.info("job=%s reply %s already in Chatwoot; not posting again", job.id, marker)
                return existing.id
        sent = self._chatwoot.send_message(
            job.conversation_id, text, private=private, content_attributes={JOB_MARKER_KEY: marker}
        )
        return sent.id

    def _start_send(self, job: ReplyJob) -> ReplyJob:
        """The job as it was before its send stamp, once the send rate allows a post."""
        while True:
            start = self._store.start_send(
                job.id,
                owner=self._worker_id,
                rate_per_s=self._settings.send_rate_per_s,
                now=self._clock(),
            )
            if start.gate is SendGate.GO and start.job is not None:
                return start.job
            if start.gate is SendGate.WAIT:
                self._sleep(start.wait_s)
                self._renew(job)
                continue
            if start.gate is SendGate.NOT_BOT:
                raise ConversationTaken(start.reason)
            raise LeaseLost(job.id)

    def _hand_off(self, job: ReplyJob, persona: BrokerPersona, reason: str) -> None:
        now_iso = dt.datetime.fromtimestamp(self._clock(), tz=dt.UTC).isoformat()
        self._chatwoot.merge_custom_attributes(
            job.conversation_id,
            {"broker_status": HANDOFF_STATUS, "handoff_reason": reason, "handoff_at": now_iso},
        )
        note = (
            f"🔔 Human specialist requested: {reason.replace('_', ' ')}. "
            f"{persona.name} (AI broker) has stepped back from this conversation."
        )
        self._post_once(job, note, marker=f"{job.id}:handoff", private=True)
        self._chatwoot.toggle_status(job.conversation_id, "open")

    # -- failure -------------------------------------------------------------------------------
    def _after_failure(
        self, job: ReplyJob, exc: Exception, *, retryable: bool, retry_after: float | None
    ) -> None:
        error = _describe(exc)
        detail = "".join(traceback.format_exception(exc))
        if retryable and job.attempts < MAX_ATTEMPTS:
            self._retry(job, error, detail, retry_after)
            return
        if job.kind is JobKind.SHADOW:
            self._finish(job, JobState.FAILED, error=error, error_detail=detail)
            return
        log.error("job=%s failed after %d attempts (%s); handing off", job.id, job.attempts, error)
        self._give_up(job, error, detail)

    def _give_up(self, job: ReplyJob, error: str, detail: str | None) -> None:
        """Apologise and hand the conversation to a human.

        If Chatwoot is still down, keep trying (backing off) so the customer is not left with
        neither a reply nor a human; only after MAX_HANDOFF_ATTEMPTS does the job fail silently
        (visible to operators as failed, with the error)."""
        try:
            persona = persona_by_slug(self._conversation(job).broker_id)
            apology_id = self._post_once(
                job, failure_apology(persona), marker=job.id, private=False
            )
            self._hand_off(job, persona, "ai_failure")
        except (LeaseLost, ConversationTaken):
            return
        except Exception as exc:  # noqa: BLE001 - retried, then recorded for an operator
            handoff_error = f"{error}; handoff failed: {_describe(exc)}"
            retryable = not isinstance(exc, ChatwootError) or exc.retryable
            if retryable and job.attempts < MAX_HANDOFF_ATTEMPTS:
                # Stay in give-up mode: the next attempt goes straight to the apology.
                self._retry(
                    job,
                    handoff_error,
                    detail,
                    getattr(exc, "retry_after", None),
                    min_attempts=MAX_ATTEMPTS,
                )
                return
            self._finish(job, JobState.FAILED, error=handoff_error, error_detail=detail)
            self._store.set_conversation_status(
                job.conversation_id, ConversationStatus.HANDED_OFF, "ai_failure", now=self._clock()
            )
            return
        if not self._store.complete_job(
            job.id,
            owner=self._worker_id,
            state=JobState.FAILED,
            now=self._clock(),
            broker_id=persona.slug,
            customer_messages=1 if job.kind is JobKind.REPLY else 0,
            handoff_reason="ai_failure",
            reply_message_id=apology_id,
            error=error,
            error_detail=detail,
        ):
            raise LeaseLost(job.id)

    def _retry(
        self,
        job: ReplyJob,
        error: str,
        detail: str | None,
        retry_after: float | None,
        *,
        min_attempts: int = 0,
    ) -> None:
        now = self._clock()
        due_at = now + retry_delay_s(job.attempts, retry_after)
        log.warning(
            "job=%s attempt %d failed (%s); retrying in %.1fs",
            job.id,
            job.attempts,
            error,
            due_at - now,
        )
        if self._store.retry_job(
            job.id,
            owner=self._worker_id,
            due_at=due_at,
            error=error,
            error_detail=detail,
            now=now,
            min_attempts=min_attempts,
        ):
            self._queue.enqueue_respond(job.id, at=due_at)

    # -- helpers -------------------------------------------------------------------------------
    def _conversation(self, job: ReplyJob) -> BrokerConversation:
        conversation = self._store.get_conversation(job.conversation_id)
        if conversation is None:
            raise StoreError(f"conversation {job.conversation_id} has no broker assignment")
        return conversation

    @property
    def _renew_every_s(self) -> float:
        return self._settings.lease_s / 3

    def _renewed(self, job: ReplyJob) -> bool:
        now = self._clock()
        renewed = self._store.renew_lease(
            job.id, owner=self._worker_id, lease_s=self._settings.lease_s, now=now
        )
        if renewed and job.id in self._lease_taken_at:
            self._lease_taken_at[job.id] = now
        return renewed

    def _renew(self, job: ReplyJob) -> None:
        """Make sure the lease outlasts the next long step (the LLM call, a send-slot wait).

        A lease taken or renewed less than a third of its length ago still has two thirds left,
        and the LeaseKeeper renews it on the same schedule, so the write is skipped then: with no
        human-like delay that is every reply, and each skip saves a store transaction. Losing the
        job meanwhile is still caught before anything is sent (`begin_send`) or recorded
        (`_finish`)."""
        taken_at = self._lease_taken_at.get(job.id)
        if taken_at is not None and self._clock() - taken_at < self._renew_every_s:
            return
        if not self._renewed(job):
            raise LeaseLost(job.id)

    def _finish(self, job: ReplyJob, state: JobState, **fields: Any) -> None:
        if not self._store.finish_job(
            job.id, owner=self._worker_id, state=state, now=self._clock(), **fields
        ):
            raise LeaseLost(job.id)


def _shadow_persona(job: ReplyJob) -> BrokerPersona:
    # A conversation n8n answers may have no broker of ours; any stable choice will do.
    return PERSONAS[bucket(job.conversation_id) % len(PERSONAS)]


def _escalation(batch: Sequence[ReplyJob]) -> EscalationReason | None:
    for job in batch:
        if job.escalation_reason:
            return EscalationReason(job.escalation_reason)
    return None


def _human_takeover_reason(remote: RemoteConversation) -> str | None:
    """Why Chatwoot says the conversation is no longer the bot's, or None
    (docs/chatwoot-contract.md §6)."""
    if remote.custom_attributes.get("broker_status") == HANDOFF_STATUS:
        return "handoff_requested"
    if remote.assignee_type == "User":
        return "human_assigned"
    if remote.status != "pending":
        return f"conversation_{remote.status}"
    return None


def _customer_name(remote: RemoteConversation, conversation: BrokerConversation) -> str:
    if remote.contact_name is not None:
        return remote.contact_name
    if conversation.lead_profile:
        return LeadProfile.from_dict(conversation.lead_profile).name
    return ""


def _describe(exc: BaseException) -> str:
    text = str(exc) or exc.__class__.__name__
    return f"{exc.__class__.__name__}: {text}"[:500]
