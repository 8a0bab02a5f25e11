"""What the code knows of Chatwoot's objects, as values (docs/chatwoot-contract.md §1, §4, §5).

The Chatwoot adapter reads Chatwoot's JSON into these, so nothing past it parses a payload.
Only what some rule reads is kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class MessageKind(StrEnum):
    """`message_type`: a name in webhooks and REST input, an integer in REST answers."""

    INCOMING = "incoming"
    OUTGOING = "outgoing"
    ACTIVITY = "activity"
    TEMPLATE = "template"


@dataclass(frozen=True)
class ChatMessage:
    id: int
    kind: MessageKind | None  # None: a type this code does not know
    content: str | None
    private: bool
    content_attributes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RemoteConversation:
    """A conversation as Chatwoot has it now (the bot's view of who owns it)."""

    id: int
    inbox_id: int | None
    status: str | None  # open, resolved, pending, snoozed
    assignee_type: str | None  # "User", "AgentBot" or None
    custom_attributes: Mapping[str, Any] = field(default_factory=dict)
    contact_name: str | None = None
    # When the last message that was not an activity line was created (epoch seconds).
    last_message_at: float | None = None


@dataclass(frozen=True)
class Contact:
    id: int
    email: str | None
    phone_number: str | None
