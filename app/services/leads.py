"""Lead-form intake: one Chatwoot conversation per lead, one greeting per conversation.

Ported from the legacy `chatwoot-conversation` route: score the lead, pick the persona, find or
create the contact, reuse the contact's open conversation in our inbox when there is one (and
skip the greeting if one was already queued or the customer has been active recently), else
create a conversation; assign the broker and queue the greeting.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.domain.chatwoot import Contact, RemoteConversation
from app.domain.jobs import JobState
from app.domain.lead import LeadForm, LeadProfile, may_replace_profile, score_lead
from app.domain.matching import choose_persona
from app.ports import JobQueue
from app.ports.chatwoot import Chatwoot, ChatwootError
from app.store.base import Store
from app.store.models import Broker, BrokerConversation, ConversationStatus

log = logging.getLogger(__name__)

RECENT_ACTIVITY_S = 24 * 3600
_REUSABLE_STATUSES = ("pending", "open")
_DEAD_GREETING_STATES = (JobState.FAILED, JobState.CANCELLED, JobState.SKIPPED)


@dataclass(frozen=True)
class LeadResult:
    conversation_id: int
    contact_id: int
    broker: Broker
    reused: bool
    greeting: str  # queued | skipped
    lead_score: int
    profile: str  # saved | kept (the submission did not prove it is the same person)

    def to_json(self) -> dict[str, Any]:
        return {
            "conversation_id": self.conversation_id,
            "contact_id": self.contact_id,
            "broker": {
                "id": self.broker.id,
                "name": self.broker.name,
                "title": self.broker.title,
                "type": self.broker.persona_type,
            },
            "reused": self.reused,
            "greeting": self.greeting,
            "lead_score": self.lead_score,
            "profile": self.profile,
        }


class LeadIntake:
    def __init__(
        self,
        store: Store,
        queue: JobQueue,
        chatwoot: Chatwoot,
        *,
        inbox_id: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._queue = queue
        self._chatwoot = chatwoot
        self._inbox_id = inbox_id
        self._clock = clock

    def submit(self, form: LeadForm) -> LeadResult:
        """Raises ChatwootError when Chatwoot fails (nothing is queued then)."""
        score = score_lead(form)
        persona = choose_persona(score, form.loan_type, form.property_category)
        contact = self._chatwoot.find_or_create_contact(
            name=form.name,
            email=form.email,
            phone_number=form.phone,
            inbox_id=self._inbox_id,
            custom_attributes={"lead_score": score, "loan_type": form.loan_type},
        )
        contact_id = contact.id
        existing = self._open_conversation(contact_id)
        attributes = {
            "lead_source": "website",
            "lead_score": score,
            "loan_type": form.loan_type,
            "property_category": form.property_category or "",
            "broker_persona": persona.slug,
        }
        if existing is None:
            conversation = self._chatwoot.create_conversation(
                inbox_id=self._inbox_id, contact_id=contact_id, custom_attributes=attributes
            )
        else:
            conversation = existing
        conversation_id = conversation.id
        now = self._clock()
        proven = self._proves_same_person(form, conversation_id, contact)
        profile = LeadProfile.from_form(form, score)
        assignment = self._store.assign_broker(
            conversation_id,
            persona.slug,
            contact_id=contact_id,
            lead_score=score,
            lead_profile=profile.to_dict() if proven else None,
            now=now,
        )
        if proven:
            skip_reason = self._greeting_skip_reason(conversation, existing is not None, assignment)
        else:
            skip_reason = "details differ from the ones that wrote the profile"
            self._note_unproven_submission(conversation_id, form)
        if skip_reason is None:
            job = self._store.create_greeting_job(conversation_id, assignment.broker_id, now=now)
            try:
                self._queue.enqueue_prepare(job.id)
            except Exception:
                log.exception("greeting job=%s not enqueued; the reaper will pick it up", job.id)
            greeting = "queued"
        else:
            log.info("conversation=%s greeting skipped: %s", conversation_id, skip_reason)
            greeting = "skipped"
        broker = next(b for b in self._store.list_brokers() if b.id == assignment.broker_id)
        return LeadResult(
            conversation_id=conversation_id,
            contact_id=contact_id,
            broker=broker,
            reused=existing is not None,
            greeting=greeting,
            lead_score=score,
            profile="saved" if proven else "kept",
        )

    def _proves_same_person(self, form: LeadForm, conversation_id: int, contact: Contact) -> bool:
        current = self._store.get_conversation(conversation_id)
        return may_replace_profile(
            form,
            current.lead_profile if current is not None else None,
            email_on_record=contact.email,
            phone_on_record=contact.phone_number,
        )

    def _note_unproven_submission(self, conversation_id: int, form: LeadForm) -> None:
        """Tell the team, not the customer: the note is private and the profile stays as it was.

        The submitter may be the customer with a new e-mail or phone, or someone using their
        details; a person can tell which.
        """
        note = (
            "A website lead form used this contact's e-mail or phone with other details "
            f"(name {form.name!r}, e-mail {form.email!r}, phone {form.phone!r}, "
            f"loan type {form.loan_type}). The lead profile was not changed and no greeting "
            "was sent; check with the customer before acting on it."
        )
        try:
            self._chatwoot.send_message(conversation_id, note, private=True)
        except ChatwootError as exc:
            log.warning(
                "conversation=%s note on an unproven lead form not posted: %s", conversation_id, exc
            )

    def _open_conversation(self, contact_id: int) -> RemoteConversation | None:
        candidates = [
            c
            for c in self._chatwoot.contact_conversations(contact_id)
            if c.inbox_id == self._inbox_id and c.status in _REUSABLE_STATUSES
        ]
        # Chatwoot lists them by last activity, newest first.
        return candidates[0] if candidates else None

    def _greeting_skip_reason(
        self, conversation: RemoteConversation, reused: bool, assignment: BrokerConversation
    ) -> str | None:
        if not reused:
            return None
        if assignment.status is not ConversationStatus.BOT or conversation.status != "pending":
            return "conversation is with a human"
        if assignment.greeting_job_id:
            greeting = self._store.get_job(assignment.greeting_job_id)
            if greeting is not None and greeting.state not in _DEAD_GREETING_STATES:
                return "greeting already sent or queued"
        last = conversation.last_message_at
        if last is not None and self._clock() - last < RECENT_ACTIVITY_S:
            return "customer recently active"
        return None
