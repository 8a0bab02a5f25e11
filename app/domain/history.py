"""A conversation's recent public turns, from Chatwoot's list-messages API.

The model answers better when it sees what was already said, but only what the customer saw:
private notes and activity lines ("Priya self-assigned this conversation") stay out, and so do
templates (forms and cards, not conversation).
"""

from __future__ import annotations

from collections.abc import Sequence

from app.domain.chatwoot import ChatMessage, MessageKind
from app.domain.conversation import ChatTurn, Role
from app.domain.events import JOB_MARKER_KEY

DEFAULT_LIMIT = 20

_ROLE_BY_KIND: dict[MessageKind, Role] = {
    MessageKind.INCOMING: "user",
    MessageKind.OUTGOING: "assistant",
}


def history_from_messages(
    messages: Sequence[ChatMessage], *, limit: int = DEFAULT_LIMIT
) -> list[ChatTurn]:
    """The last `limit` public turns, oldest first (the order Chatwoot lists them in)."""
    if limit <= 0:
        return []
    turns = [turn for turn in map(_turn, messages) if turn is not None]
    return turns[-limit:]


def _turn(message: ChatMessage) -> ChatTurn | None:
    role = _ROLE_BY_KIND.get(message.kind) if message.kind is not None else None
    if role is None or message.private:
        return None
    if message.content is None or not message.content.strip():
        return None
    return ChatTurn(role=role, content=message.content.strip())


def answered_after(messages: Sequence[ChatMessage], message_id: int) -> bool:
    """Whether someone else (n8n, a human) already posted a public reply after `message_id`.

    Used before the new pipeline answers a message that n8n may have answered after all (a
    forward whose outcome was never recorded), so the customer does not get two answers."""
    return any(
        message.id > message_id
        and message.kind is MessageKind.OUTGOING
        and not message.private
        and JOB_MARKER_KEY not in message.content_attributes
        for message in messages
    )
