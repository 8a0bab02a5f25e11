"""The Chatwoot port (app/ports/chatwoot.py) over the REST client: Chatwoot's JSON read into the
domain's values here, and nowhere past it.

Reading is lenient where Chatwoot's shapes vary by version or by endpoint (docs/chatwoot-contract.md
§1, §5: `message_type` an integer in REST answers and a name in webhooks) and strict where a rule
depends on a value: an answer without an id is a ChatwootUnavailable, like any other answer that
is not what Chatwoot sends.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.adapters.chatwoot import ChatwootClient
from app.domain.chatwoot import ChatMessage, Contact, MessageKind, RemoteConversation
from app.ports.chatwoot import ChatwootUnavailable

# REST answers carry Message.message_type as its integer (docs/chatwoot-contract.md §5).
_KIND_BY_CODE = {
    0: MessageKind.INCOMING,
    1: MessageKind.OUTGOING,
    2: MessageKind.ACTIVITY,
    3: MessageKind.TEMPLATE,
}


class ChatwootGateway:
    def __init__(self, client: ChatwootClient) -> None:
        self._client = client

    # -- contacts ------------------------------------------------------------------------------
    def find_or_create_contact(
        self,
        *,
        name: str,
        email: str | None,
        phone_number: str | None,
        inbox_id: int,
        custom_attributes: Mapping[str, Any] | None = None,
    ) -> Contact:
        raw = self._client.find_or_create_contact(
            name=name,
            email=email,
            phone_number=phone_number,
            inbox_id=inbox_id,
            custom_attributes=custom_attributes,
        )
        return read_contact(raw, "the contact")

    def contact_conversations(self, contact_id: int) -> list[RemoteConversation]:
        raws = self._client.contact_conversations(contact_id)
        return [read_conversation(raw, "a contact's conversation") for raw in raws]

    # -- conversations -------------------------------------------------------------------------
    def get_conversation(self, conversation_id: int) -> RemoteConversation:
        return read_conversation(self._client.get_conversation(conversation_id), "a conversation")

    def create_conversation(
        self, *, inbox_id: int, contact_id: int, custom_attributes: Mapping[str, Any]
    ) -> RemoteConversation:
        raw = self._client.create_conversation(
            inbox_id=inbox_id, contact_id=contact_id, custom_attributes=custom_attributes
        )
        return read_conversation(raw, "the new conversation")

    def merge_custom_attributes(self, conversation_id: int, changes: Mapping[str, Any]) -> None:
        self._client.merge_custom_attributes(conversation_id, changes)

    def toggle_status(self, conversation_id: int, status: str) -> None:
        self._client.toggle_status(conversation_id, status)

    # -- messages ------------------------------------------------------------------------------
    def list_messages(self, conversation_id: int) -> list[ChatMessage]:
        """The latest page, oldest first; entries that are not messages are left out."""
        messages = (read_message(raw) for raw in self._client.list_messages(conversation_id))
        return [message for message in messages if message is not None]

    def find_message_with_marker(
        self, conversation_id: int, key: str, value: str
    ) -> ChatMessage | None:
        raw = self._client.find_message_with_marker(conversation_id, key, value)
        return None if raw is None else _required_message(raw, "the marked message")

    def send_message(
        self,
        conversation_id: int,
        content: str,
        *,
        private: bool = False,
        content_attributes: Mapping[str, Any] | None = None,
    ) -> ChatMessage:
        raw = self._client.send_message(
            conversation_id, content, private=private, content_attributes=content_attributes
        )
        return _required_message(raw, "the sent message")


def read_message(raw: Mapping[str, Any]) -> ChatMessage | None:
    """A message from a REST answer (or a webhook's `conversation.messages[]`), or None when it
    has no integer id."""
    identifier = raw.get("id")
    if isinstance(identifier, bool) or not isinstance(identifier, int):
        return None
    content = raw.get("content")
    attributes = raw.get("content_attributes")
    return ChatMessage(
        id=identifier,
        kind=_kind(raw.get("message_type")),
        content=content if isinstance(content, str) else None,
        # Chatwoot always sends it; an absent one reads as public, as the history always has.
        private=raw.get("private") not in (False, None),
        content_attributes=dict(attributes) if isinstance(attributes, Mapping) else {},
    )


def read_conversation(raw: Mapping[str, Any], what: str) -> RemoteConversation:
    identifier = raw.get("id")
    if isinstance(identifier, bool) or not isinstance(identifier, int):
        raise ChatwootUnavailable(f"Chatwoot answered {what} without an id")
    meta = _mapping(raw.get("meta"))
    sender = _mapping(meta.get("sender"))
    attributes = raw.get("custom_attributes")
    last = raw.get("last_non_activity_message")
    created = last.get("created_at") if isinstance(last, Mapping) else None
    return RemoteConversation(
        id=identifier,
        inbox_id=_int_or_none(raw.get("inbox_id")),
        status=_text_or_none(raw.get("status")),
        assignee_type=_text_or_none(meta.get("assignee_type")),
        custom_attributes=dict(attributes) if isinstance(attributes, Mapping) else {},
        contact_name=_text_or_none(sender.get("name")),
        last_message_at=(
            float(created)
            if isinstance(created, int | float) and not isinstance(created, bool)
            else None
        ),
    )


def read_contact(raw: Mapping[str, Any], what: str) -> Contact:
    identifier = raw.get("id")
    if isinstance(identifier, bool) or not isinstance(identifier, int):
        raise ChatwootUnavailable(f"Chatwoot answered {what} without an id")
    return Contact(
        id=identifier,
        email=_text_or_none(raw.get("email")),
        phone_number=_text_or_none(raw.get("phone_number")),
    )


def _required_message(raw: Mapping[str, Any], what: str) -> ChatMessage:
    message = read_message(raw)
    if message is None:
        raise ChatwootUnavailable(f"Chatwoot answered {what} without an id")
    return message


def _kind(value: object) -> MessageKind | None:
    # bool is an int subclass: `True` must not read as "outgoing".
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return _KIND_BY_CODE.get(value)
    if isinstance(value, str):
        try:
            return MessageKind(value)
        except ValueError:
            return None
    return None


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
