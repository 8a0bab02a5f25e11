import itertools
import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from app.adapters.chatwoot_gateway import read_message
from app.domain.chatwoot import ChatMessage, MessageKind
from app.domain.conversation import ChatTurn
from app.domain.events import JOB_MARKER_KEY
from app.domain.history import answered_after
from app.domain.history import history_from_messages as history_of
from tests.support.fixtures import CHATWOOT_FIXTURES

LIST_MESSAGES = CHATWOOT_FIXTURES / "api" / "list_messages.json"
_IDS = itertools.count(1)


def item(message_type: object, content: object, **extra: Any) -> dict[str, Any]:
    return {
        "id": next(_IDS),
        "message_type": message_type,
        "content": content,
        "private": False,
        **extra,
    }


def history_from_messages(raws: Sequence[object], **options: int) -> list[ChatTurn]:
    """The history of messages as Chatwoot's REST API lists them, read as the gateway reads them
    (the adapter keeps the JSON objects of the page and reads each)."""
    messages: list[ChatMessage] = [
        message
        for raw in raws
        if isinstance(raw, Mapping) and (message := read_message(raw)) is not None
    ]
    return history_of(messages, **options)


def test_the_recorded_conversation_keeps_only_public_turns() -> None:
    messages = json.loads(LIST_MESSAGES.read_text(encoding="utf-8"))["payload"]
    turns = history_from_messages(messages)
    assert [turn.role for turn in turns] == ["user", "assistant", "user", "assistant"]
    assert turns[0].content.startswith("Hi, I'm on an HDB concessionary loan")
    assert turns[-1].content.startswith("Hi Wei Ming, I'm Priya")
    assert not any("Cash-out refi on HDB flat" in turn.content for turn in turns)
    assert not any("self-assigned" in turn.content for turn in turns)


def test_incoming_is_the_user_and_outgoing_the_assistant() -> None:
    turns = history_from_messages([item(0, "Hello"), item(1, "Hi, I'm Sarah")])
    assert turns == [ChatTurn("user", "Hello"), ChatTurn("assistant", "Hi, I'm Sarah")]


def test_webhook_style_string_types_are_understood() -> None:
    turns = history_from_messages([item("incoming", "Hello"), item("outgoing", "Hi")])
    assert [turn.role for turn in turns] == ["user", "assistant"]


@pytest.mark.parametrize(
    "message",
    [
        item(2, "Conversation was reopened"),
        item(3, "Please fill in this form"),
        item("activity", "Assigned to Priya"),
        item("template", "Rate the chat"),
        item(1, "internal note", private=True),
        item(1, "odd private flag", private="yes"),
        item(0, ""),
        item(0, "   \n"),
        item(0, None),
        item(0, 42),
        item(True, "boolean type"),
        item(None, "no type"),
        item(7, "unknown type"),
        item([0], "list type"),
        {"content": "no message_type"},
        "not a mapping",
        None,
    ],
)
def test_non_public_empty_or_malformed_items_are_skipped(message: Any) -> None:
    assert history_from_messages([item(0, "kept"), message]) == [ChatTurn("user", "kept")]


def test_a_missing_private_flag_counts_as_public() -> None:
    turns = history_from_messages([{"id": 1, "message_type": 0, "content": "Hello"}])
    assert turns == [ChatTurn("user", "Hello")]


def test_content_is_stripped() -> None:
    assert history_from_messages([item(0, "  Hello \n")]) == [ChatTurn("user", "Hello")]


def test_only_the_last_turns_are_kept_oldest_first() -> None:
    messages = [item(i % 2, f"message {i}") for i in range(30)]
    turns = history_from_messages(messages, limit=5)
    assert [turn.content for turn in turns] == [f"message {i}" for i in range(25, 30)]
    assert len(history_from_messages(messages)) == 20


def test_skipped_items_do_not_count_towards_the_limit() -> None:
    messages = [item(0, "first"), item(2, "activity"), item(1, "second"), item(0, "")]
    assert [t.content for t in history_from_messages(messages, limit=2)] == ["first", "second"]


@pytest.mark.parametrize("limit", [0, -3])
def test_a_non_positive_limit_gives_no_history(limit: int) -> None:
    assert history_from_messages([item(0, "Hello")], limit=limit) == []


def test_no_messages_gives_no_history() -> None:
    assert history_from_messages([]) == []


def test_a_message_without_an_integer_id_is_not_read() -> None:
    assert history_from_messages([{"message_type": 0, "content": "no id"}]) == []
    assert history_from_messages([item(0, "kept"), {**item(0, "x"), "id": "7"}]) == [
        ChatTurn("user", "kept")
    ]


def public_reply(message_id: int, **overrides: Any) -> ChatMessage:
    fields: dict[str, Any] = {
        "id": message_id,
        "kind": MessageKind.OUTGOING,
        "content": "a reply",
        "private": False,
        "content_attributes": {},
    }
    return ChatMessage(**{**fields, **overrides})


def test_a_later_public_reply_that_is_not_ours_answers_the_message() -> None:
    assert answered_after([public_reply(11)], 10)
    assert not answered_after([public_reply(10), public_reply(9)], 10)  # not after it
    assert not answered_after([public_reply(11, private=True)], 10)  # a note
    assert not answered_after([public_reply(11, kind=MessageKind.INCOMING)], 10)  # the customer
    assert not answered_after([public_reply(11, content_attributes={JOB_MARKER_KEY: "j"})], 10)
