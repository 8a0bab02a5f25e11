"""The records the sandbox keeps (installation, contacts, conversations, messages, webhooks) and
the vocabulary of their fields."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from app.sandbox.chatwoot.wire import iso_or_none

WebhookKind = Literal["agent_bot", "account"]

ACCOUNT_WEBHOOK_EVENTS = frozenset(
    {
        "conversation_created",
        "conversation_status_changed",
        "conversation_updated",
        "contact_created",
        "contact_updated",
        "message_created",
        "message_updated",
        "webwidget_triggered",
        "inbox_created",
        "inbox_updated",
        "conversation_typing_on",
        "conversation_typing_off",
    }
)
AGENT_BOT_EVENTS = frozenset(
    {
        "message_created",
        "message_updated",
        "conversation_opened",
        "conversation_resolved",
        "conversation_status_changed",
        "conversation_updated",
        "webwidget_triggered",
    }
)

MESSAGE_TYPES = {"incoming": 0, "outgoing": 1, "activity": 2, "template": 3}
MESSAGE_TYPE_NAMES = {number: name for name, number in MESSAGE_TYPES.items()}
INCOMING, OUTGOING, ACTIVITY = 0, 1, 2
CONTENT_TYPES = frozenset(
    {
        "text",
        "input_text",
        "input_textarea",
        "input_email",
        "input_select",
        "cards",
        "form",
        "article",
        "incoming_email",
        "input_csat",
        "integrations",
        "sticker",
        "voice_call",
    }
)
CONVERSATION_STATUSES = frozenset({"open", "resolved", "pending", "snoozed"})
PRIORITIES = frozenset({"low", "medium", "high", "urgent"})
# Conversation#list_of_keys: a change to one of these fires conversation_updated.
TRACKED_KEYS = (
    "team_id",
    "assignee_id",
    "assignee_agent_bot_id",
    "status",
    "snoozed_until",
    "custom_attributes",
    "label_list",
    "waiting_since",
    "first_reply_created_at",
    "priority",
)


# The automation user's id: the n8n sandbox posts as this user (N8N_SENDER=user:31).
AUTOMATION_USER_ID = 31


@dataclass(frozen=True)
class Installation:
    """The fixed cast of the sandbox: one account, one API inbox with an active bot, one agent,
    and one automation user (n8n's)."""

    account_id: int
    account_name: str
    inbox_id: int
    inbox_name: str
    channel_id: int
    bot_id: int
    bot_name: str
    agent_id: int
    agent_name: str
    created_at: float
    # A second user, for integrations that post with their own user token (the n8n workflow).
    automation_user_id: int = AUTOMATION_USER_ID
    automation_user_name: str = "n8n Automation"

    @property
    def agent_email(self) -> str:
        return f"{self.agent_name.lower().replace(' ', '.')}@harbourline.example"

    @property
    def agent_available_name(self) -> str:
        return self.agent_name.split()[0]


@dataclass(frozen=True)
class Actor:
    """Who a request acts as: the user behind the user token, or the agent bot."""

    kind: Literal["user", "bot"]
    id: int
    name: str

    @property
    def sender_type(self) -> str:
        return "AgentBot" if self.kind == "bot" else "User"


@dataclass
class Contact:
    id: int
    name: str
    email: str | None
    phone_number: str | None
    identifier: str | None
    additional_attributes: dict[str, Any]
    custom_attributes: dict[str, Any]
    created_at: float
    blocked: bool = False
    last_activity_at: float | None = None


@dataclass(frozen=True)
class ContactInbox:
    id: int
    contact_id: int
    inbox_id: int
    source_id: str
    created_at: float
    pubsub_token: str


@dataclass
class Message:
    id: int
    conversation_id: int
    content: str | None
    message_type: int
    private: bool
    sender_type: str | None
    sender_id: int | None
    created_at: float
    content_type: str = "text"
    status: str = "sent"
    source_id: str | None = None
    content_attributes: dict[str, Any] = field(default_factory=dict)
    additional_attributes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Conversation:
    display_id: int
    uuid: str
    contact_id: int
    contact_inbox_id: int
    status: str
    created_at: float
    custom_attributes: dict[str, Any]
    additional_attributes: dict[str, Any]
    updated_at: float = 0.0
    last_activity_at: float = 0.0
    labels: list[str] = field(default_factory=list)
    priority: str | None = None
    assignee_id: int | None = None
    assignee_agent_bot_id: int | None = None
    snoozed_until: float | None = None
    waiting_since: float | None = None
    first_reply_created_at: float | None = None
    agent_last_seen_at: float | None = None
    assignee_last_seen_at: float | None = None
    contact_last_seen_at: float | None = None
    messages: list[Message] = field(default_factory=list)

    def last_chat_message(self) -> Message | None:
        """The `chat` scope's last message: no activity, no private notes."""
        for message in reversed(self.messages):
            if message.message_type != ACTIVITY and not message.private:
                return message
        return None

    def last_non_activity_message(self) -> Message | None:
        for message in reversed(self.messages):
            if message.message_type != ACTIVITY:
                return message
        return None

    def unread_count(self) -> int:
        """Incoming messages the agents have not seen, capped at 10 as Chatwoot does."""
        seen = self.agent_last_seen_at or 0.0
        unread = sum(1 for m in self.messages if m.message_type == INCOMING and m.created_at > seen)
        return min(unread, 10)

    def tracked_state(self) -> dict[str, Any]:
        """The `list_of_keys` values, in the JSON form they take inside `changed_attributes`."""
        return {
            "team_id": None,
            "assignee_id": self.assignee_id,
            "assignee_agent_bot_id": self.assignee_agent_bot_id,
            "status": self.status,
            "snoozed_until": iso_or_none(self.snoozed_until),
            "custom_attributes": dict(self.custom_attributes),
            "label_list": list(self.labels),
            "waiting_since": iso_or_none(self.waiting_since),
            "first_reply_created_at": iso_or_none(self.first_reply_created_at),
            "priority": self.priority,
        }


@dataclass(frozen=True)
class Webhook:
    """A registered receiver: an agent bot's outgoing_url or an account webhook."""

    url: str
    secret: str | None
    kind: WebhookKind
    subscriptions: frozenset[str] | None = None

    def wants(self, event: str) -> bool:
        if self.kind == "agent_bot":
            return event in AGENT_BOT_EVENTS
        allowed = self.subscriptions if self.subscriptions is not None else ACCOUNT_WEBHOOK_EVENTS
        return event in ACCOUNT_WEBHOOK_EVENTS and event in allowed

    def describe(self) -> dict[str, Any]:
        subscriptions = None if self.subscriptions is None else sorted(self.subscriptions)
        return {
            "url": self.url,
            "secret": self.secret,
            "kind": self.kind,
            "subscriptions": subscriptions,
        }


def make_webhook(
    url: str, *, secret: str | None, kind: str, subscriptions: list[str] | None = None
) -> Webhook:
    """Validate a webhook registration; ValueError says what is wrong."""
    if kind not in ("agent_bot", "account"):
        raise ValueError(f"kind must be 'agent_bot' or 'account', got {kind!r}")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError(f"url must be an http(s) URL, got {url!r}")
    if subscriptions is not None:
        unknown = sorted(set(subscriptions) - ACCOUNT_WEBHOOK_EVENTS)
        if unknown:
            raise ValueError(
                f"unknown subscriptions {unknown}; allowed: {sorted(ACCOUNT_WEBHOOK_EVENTS)}"
            )
    return Webhook(
        url=url,
        secret=secret or None,
        kind=kind,  # type: ignore[arg-type]
        subscriptions=None if subscriptions is None else frozenset(subscriptions),
    )
