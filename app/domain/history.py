"""A conversation's recent public turns, from Chatwoot's list-messages API.

The model answers better when it sees what was already said, but only what the customer saw:
private notes and activity lines ("Priya self-assigned this conversation") stay out, and so do
templates (forms and cards, not conversation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from app.domain.conversation import ChatTurn, Role
from app.domain.events import JOB_MARKER_KEY

DEFAULT_LIMIT = 20

# In REST responses `message_type` is an integer (docs/chatwoot-contract.md §5); the webhook's
# string names are accepted too, so the same code reads `conversation.messages[]` and webhooks.
_ROLE_BY_MESSAGE_TYPE: dict[int | str, Role] = {
    0: "user",
    1: "assistant",
    "incoming": "user",
    "outgoing": "assistant",
}


def history_from_messages(
    messages: Sequence[Mapping[str, object]], *, limit: int = DEFAULT_LIMIT
) -> list[ChatTurn]:
    """The last `limit` public turns, oldest first (the order Chatwoot lists them in)."""
    if limit <= 0:
        return []
    turns = [turn for turn in map(_turn, messages) if turn is not None]
    return turns[-limit:]


def _turn(message: object) -> ChatTurn | None:
    if not isinstance(message, Mapping):
        return None
    message_type = message.get("message_type")
    # bool is an int subclass: `True` would otherwise read as "outgoing".
    if isinstance(message_type, bool) or not isinstance(message_type, int | str):
        return None
    role = _ROLE_BY_MESSAGE_TYPE.get(message_type)
    if role is None or message.get("private") not in (False, None):
        return None
    content = message.get("content")
    if not isinstance(content, str) or not content.strip():
        return None
    return ChatTurn(role=role, content=content.strip())


def answered_after(messages: Sequence[Mapping[str, object]], message_id: int) -> bool:
    """Whether someone else (n8n, a human) already posted a public reply after `message_id`.

    Used before the new pipeline answers a message that n8n may have answered after all (a
    forward whose outcome was never recorded), so the customer does not get two answers."""
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        identifier = message.get("id")
        later = isinstance(identifier, int) and identifier > message_id
        outgoing = message.get("message_type") in (1, "outgoing")
        attributes = message.get("content_attributes")
        ours = isinstance(attributes, Mapping) and JOB_MARKER_KEY in attributes
        if later and outgoing and message.get("private") is False and not ours:
            return True
    return False
