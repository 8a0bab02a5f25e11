"""Reading Chatwoot's JSON into the domain's values (app/adapters/chatwoot_gateway.py), on the
recorded API shapes and on what a version or a proxy might send instead."""

from __future__ import annotations

from typing import Any

import pytest

from app.adapters.chatwoot_gateway import read_contact, read_conversation, read_message
from app.domain.chatwoot import ChatMessage, Contact, MessageKind, RemoteConversation
from app.ports.chatwoot import ChatwootUnavailable
from tests.support.fixtures import chatwoot_fixture


def test_a_created_conversation_is_read_with_what_the_rules_need() -> None:
    raw = chatwoot_fixture("api/create_conversation.json")
    conversation = read_conversation(raw, "the new conversation")
    assert conversation == RemoteConversation(
        id=318,
        inbox_id=7,
        status="pending",
        assignee_type=None,
        custom_attributes=raw["custom_attributes"],
        contact_name="Tan Wei Ming",
        last_message_at=None,
    )


def test_a_contacts_conversation_carries_its_last_activity() -> None:
    [raw] = chatwoot_fixture("api/contact_conversations.json")["payload"]
    conversation = read_conversation(raw, "a contact's conversation")
    assert (conversation.status, conversation.last_message_at) == ("open", 1781921970.0)


def test_a_human_assignee_and_a_handoff_attribute_are_read() -> None:
    raw = {
        "id": 9,
        "status": "open",
        "meta": {"assignee_type": "User", "sender": {"name": "  "}},
        "custom_attributes": {"broker_status": "handoff_requested"},
    }
    conversation = read_conversation(raw, "a conversation")
    assert conversation.assignee_type == "User"
    assert conversation.custom_attributes == {"broker_status": "handoff_requested"}
    assert conversation.contact_name is None  # blank is no name


@pytest.mark.parametrize("identifier", [None, "318", True, 3.5])
def test_a_conversation_without_an_integer_id_is_an_unavailable_chatwoot(
    identifier: object,
) -> None:
    with pytest.raises(ChatwootUnavailable, match="without an id"):
        read_conversation({"id": identifier, "status": "pending"}, "a conversation")


def test_odd_shapes_read_as_absent_not_as_errors() -> None:
    raw = {"id": 1, "inbox_id": "7", "meta": [], "custom_attributes": "x", "status": 3}
    conversation = read_conversation(raw, "a conversation")
    assert conversation == RemoteConversation(
        id=1, inbox_id=None, status=None, assignee_type=None, custom_attributes={}
    )


def test_a_contact_is_read_from_the_create_answer() -> None:
    raw = chatwoot_fixture("api/create_contact.json")["payload"]["contact"]
    assert read_contact(raw, "the contact") == Contact(
        id=4521, email="weiming.tan@example.com", phone_number="+6591234567"
    )
    with pytest.raises(ChatwootUnavailable):
        read_contact({"email": "x@example.com"}, "the contact")


def test_a_sent_message_is_read_with_its_id_and_marker() -> None:
    raw: dict[str, Any] = chatwoot_fixture("api/create_message.json")
    raw["content_attributes"] = {"broker_job_id": "j-1"}
    message = read_message(raw)
    assert message == ChatMessage(
        id=90212,
        kind=MessageKind.OUTGOING,
        content=raw["content"],
        private=False,
        content_attributes={"broker_job_id": "j-1"},
    )


@pytest.mark.parametrize(
    ("message_type", "kind"),
    [
        (0, MessageKind.INCOMING),
        (2, MessageKind.ACTIVITY),
        ("template", MessageKind.TEMPLATE),
        (True, None),
        (9, None),
        ("note", None),
        (None, None),
    ],
)
def test_message_types_as_integers_or_names(message_type: object, kind: MessageKind | None) -> None:
    message = read_message({"id": 1, "message_type": message_type, "private": False})
    assert message is not None and message.kind is kind


def test_privacy_is_read_strictly() -> None:
    def private(value: object) -> bool:
        message = read_message({"id": 1, "message_type": 1, "private": value})
        assert message is not None
        return message.private

    assert (private(False), private(None), private(True), private("yes")) == (
        False,
        False,
        True,
        True,
    )
