"""What to do with a Chatwoot webhook: answer it, ignore it, or step back for a human.

The bot receives every message of its inbox, including its own replies, human agents' replies and
private notes (docs/chatwoot-contract.md §1, §6). Only a customer's public message in a
conversation the bot still owns (status "pending", no human assignee) gets an answer. A human
replying, being assigned, or the conversation leaving "pending" means a person has taken over, and
the bot must never answer that conversation again.

Payloads are trusted only as far as checked here: fields we act on are validated and a malformed
event we would have acted on raises `PayloadError`; anything else we do not act on is ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

# Our own replies carry this key in `content_attributes`; Chatwoot stores and echoes it back, which
# is the only way to tell our replies from a human's when both are sent with a user token.
JOB_MARKER_KEY = "broker_job_id"

MAX_CONTENT_CHARS = 4000

_CONVERSATION_EVENTS = frozenset(
    {
        "conversation_status_changed",
        "conversation_updated",
        "conversation_opened",
        "conversation_resolved",
    }
)
_BOT_STATUS = "pending"
_HUMAN_ASSIGNEE_TYPE = "User"


class EventAction(StrEnum):
    """The receiver's three possible responses to a webhook."""

    ANSWER = "answer"
    IGNORE = "ignore"
    HUMAN_TAKEOVER = "human_takeover"


@dataclass(frozen=True)
class InboundMessage:
    """A customer message the bot should answer. `conversation_id` is Chatwoot's display id."""

    message_id: int
    conversation_id: int
    account_id: int | None
    inbox_id: int | None
    content: str
    created_at: str | None
    contact_id: int | None
    contact_name: str | None


@dataclass(frozen=True)
class EventDecision:
    """The verdict on one webhook; `reason` is a stable string for logs and metrics."""

    action: EventAction
    reason: str
    event: str
    conversation_id: int | None
    message: InboundMessage | None


class PayloadError(ValueError):
    """An event we would act on lacks a field we need; the message names the field."""


SENDER_TYPES = ("user", "agent_bot")


@dataclass(frozen=True)
class Sender:
    """Who posted a message, as Chatwoot names them: a user (agent) or an agent bot, by id."""

    type: str
    id: int

    @classmethod
    def parse(cls, text: str) -> Sender:
        """`user:<id>` or `agent_bot:<id>`; ValueError otherwise."""
        kind, _, number = text.strip().partition(":")
        if kind not in SENDER_TYPES or not number.strip().isdigit():
            raise ValueError(f"expected user:<id> or agent_bot:<id>, got {text!r}")
        return cls(kind, int(number))

    def __str__(self) -> str:
        return f"{self.type}:{self.id}"


def sender_of(payload: Mapping[str, object]) -> Sender | None:
    """The message's sender, when Chatwoot names one with a type we know."""
    sender = _mapping(payload.get("sender"))
    kind, number = sender.get("type"), _int_or_none(sender.get("id"))
    if kind not in SENDER_TYPES or number is None:
        return None
    return Sender(str(kind), number)


def classify_event(payload: Mapping[str, object]) -> EventDecision:
    """Decide what the receiver does with one Chatwoot webhook body."""
    if not isinstance(payload, Mapping):
        return _ignore("", "event_not_handled", None)
    event = payload.get("event")
    if not isinstance(event, str):
        return _ignore("", "event_not_handled", None)
    if event == "message_created":
        return _classify_message_created(payload)
    if event == "message_updated":
        return _ignore(event, "message_updated", _conversation_id_if_any(payload))
    if event in _CONVERSATION_EVENTS:
        return _classify_conversation_change(event, payload)
    return _ignore(event, "event_not_handled", None)


def _classify_message_created(payload: Mapping[str, object]) -> EventDecision:
    event = "message_created"
    message_id = _require_int(payload.get("id"), "id")
    message_type = payload.get("message_type")
    if not isinstance(message_type, str):
        raise PayloadError("message_type must be a string")
    private = _require_bool(payload.get("private"), "private")
    conversation = payload.get("conversation")
    if not isinstance(conversation, Mapping):
        raise PayloadError("conversation must be an object")
    conversation_id = _require_int(conversation.get("id"), "conversation.id")

    if private:
        return _ignore(event, "private_note", conversation_id)
    if message_type == "template":
        return _ignore(event, "template", conversation_id)
    if message_type == "outgoing":
        return _classify_outgoing(payload, conversation_id)
    if message_type != "incoming":
        return _ignore(event, "event_not_handled", conversation_id)

    if not _bot_owns(conversation):
        return _ignore(event, "conversation_not_bot_handled", conversation_id)
    content = payload.get("content")
    text = content.strip()[:MAX_CONTENT_CHARS] if isinstance(content, str) else ""
    if not text:
        # Attachment-only messages (a photo of a payslip, say) have nothing to answer in text.
        return _ignore(event, "empty_message", conversation_id)

    sender = _mapping(payload.get("sender"))
    created_at = payload.get("created_at")
    contact_name = sender.get("name")
    message = InboundMessage(
        message_id=message_id,
        conversation_id=conversation_id,
        # Older Chatwoot versions lack some of these; take whichever copy is present.
        account_id=_first_int(
            _mapping(payload.get("account")).get("id"),
            _mapping(conversation.get("account")).get("id"),
        ),
        inbox_id=_first_int(_mapping(payload.get("inbox")).get("id"), conversation.get("inbox_id")),
        content=text,
        created_at=created_at if isinstance(created_at, str) else None,
        contact_id=_int_or_none(sender.get("id")),
        contact_name=contact_name if isinstance(contact_name, str) else None,
    )
    return EventDecision(EventAction.ANSWER, "customer_message", event, conversation_id, message)


def _classify_outgoing(payload: Mapping[str, object], conversation_id: int) -> EventDecision:
    event = "message_created"
    sender_type = _mapping(payload.get("sender")).get("type")
    if JOB_MARKER_KEY in _mapping(payload.get("content_attributes")) or sender_type == "agent_bot":
        return _ignore(event, "echo", conversation_id)
    if sender_type == "user":
        return EventDecision(
            EventAction.HUMAN_TAKEOVER, "human_reply", event, conversation_id, None
        )
    # No sender (automation rules, system) or another assistant: nobody has taken over.
    return _ignore(event, "automated_reply", conversation_id)


def _classify_conversation_change(event: str, payload: Mapping[str, object]) -> EventDecision:
    conversation_id = _require_int(payload.get("id"), "id")
    if _mapping(payload.get("meta")).get("assignee_type") == _HUMAN_ASSIGNEE_TYPE:
        return EventDecision(
            EventAction.HUMAN_TAKEOVER, "human_assigned", event, conversation_id, None
        )
    status = payload.get("status")
    if not isinstance(status, str):
        raise PayloadError("status must be a string")
    if status != _BOT_STATUS:
        return EventDecision(
            EventAction.HUMAN_TAKEOVER, "conversation_opened", event, conversation_id, None
        )
    # Still pending with no human: our own attribute or label writes echo back as these events.
    return _ignore(event, "conversation_pending", conversation_id)


def _bot_owns(conversation: Mapping[object, object]) -> bool:
    """Chatwoot keeps a bot's conversation "pending"; a human assignment clears the bot."""
    if conversation.get("status") != _BOT_STATUS:
        return False
    return _mapping(conversation.get("meta")).get("assignee_type") != _HUMAN_ASSIGNEE_TYPE


def _ignore(event: str, reason: str, conversation_id: int | None) -> EventDecision:
    return EventDecision(EventAction.IGNORE, reason, event, conversation_id, None)


def _conversation_id_if_any(payload: Mapping[str, object]) -> int | None:
    return _int_or_none(_mapping(payload.get("conversation")).get("id"))


def _mapping(value: object) -> Mapping[object, object]:
    return value if isinstance(value, Mapping) else {}


# Chatwoot ids are Postgres bigints: positive and below 2**63 (and so is what our stores keep).
MAX_ID = 2**63 - 1


def _int_or_none(value: object) -> int | None:
    # bool is an int subclass in Python, but `true` is never an id.
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_ID:
        return value
    return None


def _first_int(*values: object) -> int | None:
    for value in values:
        number = _int_or_none(value)
        if number is not None:
            return number
    return None


def _require_int(value: object, field: str) -> int:
    number = _int_or_none(value)
    if number is None:
        raise PayloadError(f"{field} must be a positive integer id")
    return number


def _require_bool(value: object, field: str) -> bool:
    if isinstance(value, bool):
        return value
    # Tolerate the loose encodings other senders (n8n replays, hand-written tests) use.
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise PayloadError(f"{field} must be a boolean")


def foreign_reply_text(payload: Mapping[str, object]) -> str | None:
    """The text of a public outgoing message we did not send (no job marker), else None.

    Whether it is n8n's reply or a human's is for its sender to say (N8N_SENDER): the workflow
    posts with a user or bot token, and only our own marker tells our replies apart (Chatwoot's
    contract, docs/chatwoot.md)."""
    if payload.get("event") != "message_created" or payload.get("message_type") != "outgoing":
        return None
    if payload.get("private") is not False:
        return None
    attributes = payload.get("content_attributes")
    if isinstance(attributes, Mapping) and JOB_MARKER_KEY in attributes:
        return None
    content = payload.get("content")
    return content.strip() if isinstance(content, str) and content.strip() else None
