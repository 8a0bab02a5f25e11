import copy
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.domain.events import (
    JOB_MARKER_KEY,
    MAX_CONTENT_CHARS,
    EventAction,
    EventDecision,
    InboundMessage,
    PayloadError,
    classify_event,
)
from tests.support.fixtures import CHATWOOT_FIXTURES

FIXTURES = CHATWOOT_FIXTURES


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return data


def incoming(**changes: Any) -> dict[str, Any]:
    payload = copy.deepcopy(_INCOMING)
    payload.update(changes)
    return payload


_INCOMING = load("message_created.incoming_contact.json")

EXPECTED_BY_FIXTURE = {
    "message_created.incoming_contact.json": (EventAction.ANSWER, "customer_message"),
    "message_created.outgoing_agent_bot_echo.json": (EventAction.IGNORE, "echo"),
    "message_created.outgoing_human_agent.json": (EventAction.HUMAN_TAKEOVER, "human_reply"),
    "message_created.private_note.json": (EventAction.IGNORE, "private_note"),
    "message_updated.outgoing_agent_bot_status_read.json": (EventAction.IGNORE, "message_updated"),
    "conversation_status_changed.bot_handoff.json": (
        EventAction.HUMAN_TAKEOVER,
        "conversation_opened",
    ),
    "conversation_updated.assignee_changed.json": (EventAction.HUMAN_TAKEOVER, "human_assigned"),
    "conversation_created.json": (EventAction.IGNORE, "event_not_handled"),
    "activity_message.api_item.NOT_A_WEBHOOK.json": (EventAction.IGNORE, "event_not_handled"),
}


def test_every_fixture_has_an_expectation() -> None:
    assert {path.name for path in FIXTURES.glob("*.json")} == set(EXPECTED_BY_FIXTURE)


@pytest.mark.parametrize(("name", "expected"), EXPECTED_BY_FIXTURE.items())
def test_fixture_is_classified(name: str, expected: tuple[EventAction, str]) -> None:
    decision = classify_event(load(name))
    assert (decision.action, decision.reason) == expected
    if decision.action is not EventAction.ANSWER:
        assert decision.message is None
    if "event" in load(name) and name != "conversation_created.json":
        assert decision.conversation_id == 318


def test_the_signed_wire_body_is_a_private_note() -> None:
    body = load("signed/message_created.private_note.body.json")
    assert classify_event(body).reason == "private_note"


def test_a_customer_message_becomes_an_inbound_message() -> None:
    decision = classify_event(_INCOMING)
    assert decision == EventDecision(
        action=EventAction.ANSWER,
        reason="customer_message",
        event="message_created",
        conversation_id=318,
        message=InboundMessage(
            message_id=90211,
            conversation_id=318,
            account_id=3,
            inbox_id=7,
            content=_INCOMING["content"],
            created_at="2026-06-20T02:14:06.412Z",
            contact_id=4521,
            contact_name="Tan Wei Ming",
        ),
    )


def test_ids_fall_back_to_the_conversation_copy() -> None:
    payload = incoming()
    del payload["account"], payload["inbox"]
    message = classify_event(payload).message
    assert message is not None
    assert (message.account_id, message.inbox_id) == (3, 7)


def test_missing_optional_fields_become_none() -> None:
    payload = incoming(sender=None, created_at=1781921646)
    del payload["account"], payload["inbox"]
    del payload["conversation"]["account"], payload["conversation"]["inbox_id"]
    message = classify_event(payload).message
    assert message is not None
    assert message.account_id is None
    assert message.inbox_id is None
    assert message.contact_id is None
    assert message.contact_name is None
    assert message.created_at is None


def test_content_is_stripped_and_capped() -> None:
    message = classify_event(incoming(content="  hello  \n")).message
    assert message is not None and message.content == "hello"
    long = classify_event(incoming(content="a" * (MAX_CONTENT_CHARS + 500))).message
    assert long is not None and len(long.content) == MAX_CONTENT_CHARS


@pytest.mark.parametrize("content", [None, "", "   \n", 42, ["hi"]])
def test_a_message_without_text_is_not_answered(content: object) -> None:
    decision = classify_event(incoming(content=content))
    assert (decision.action, decision.reason) == (EventAction.IGNORE, "empty_message")
    assert decision.conversation_id == 318


@pytest.mark.parametrize("status", ["open", "resolved", "snoozed", None])
def test_the_bot_answers_only_pending_conversations(status: str | None) -> None:
    payload = incoming()
    payload["conversation"]["status"] = status
    assert classify_event(payload).reason == "conversation_not_bot_handled"


def test_the_bot_does_not_answer_a_conversation_a_human_was_assigned() -> None:
    payload = incoming()
    payload["conversation"]["meta"]["assignee_type"] = "User"
    assert classify_event(payload).reason == "conversation_not_bot_handled"


def test_a_bot_assignee_still_lets_the_bot_answer() -> None:
    payload = incoming()
    payload["conversation"]["meta"]["assignee_type"] = "AgentBot"
    assert classify_event(payload).action is EventAction.ANSWER


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"private": True}, "private_note"),
        ({"message_type": "template"}, "template"),
        ({"message_type": "activity"}, "event_not_handled"),
        (
            {
                "message_type": "outgoing",
                "sender": {"id": 21, "type": "user"},
                "content_attributes": {JOB_MARKER_KEY: "job-1"},
            },
            "echo",
        ),
        ({"message_type": "outgoing", "sender": {"id": 12, "type": "agent_bot"}}, "echo"),
        ({"message_type": "outgoing", "sender": None}, "automated_reply"),
        ({"message_type": "outgoing", "sender": {"type": "captain_assistant"}}, "automated_reply"),
    ],
)
def test_messages_that_are_not_answered(changes: dict[str, Any], reason: str) -> None:
    decision = classify_event(incoming(**changes))
    assert (decision.action, decision.reason) == (EventAction.IGNORE, reason)
    assert decision.message is None


def test_a_public_reply_by_a_user_without_our_marker_is_a_human_takeover() -> None:
    decision = classify_event(
        incoming(message_type="outgoing", sender={"id": 21, "name": "Priya", "type": "user"})
    )
    assert (decision.action, decision.reason) == (EventAction.HUMAN_TAKEOVER, "human_reply")
    assert decision.conversation_id == 318


def test_a_private_note_with_a_user_sender_is_not_a_takeover() -> None:
    note = load("message_created.private_note.json")
    assert note["sender"]["type"] == "user"
    assert classify_event(note).action is EventAction.IGNORE


@pytest.mark.parametrize(("value", "expected"), [("false", True), (0, True), ("true", False)])
def test_loosely_encoded_private_flags_are_understood(value: object, expected: bool) -> None:
    assert (classify_event(incoming(private=value)).action is EventAction.ANSWER) == expected


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda p: p.pop("id"), "id must be a positive integer id"),
        (lambda p: p.update(id="90211"), "id must be a positive integer id"),
        (lambda p: p.update(id=True), "id must be a positive integer id"),
        (lambda p: p.update(id=1.5), "id must be a positive integer id"),
        (lambda p: p.update(id=0), "id must be a positive integer id"),
        (lambda p: p.update(id=2**63), "id must be a positive integer id"),
        (lambda p: p.pop("message_type"), "message_type must be a string"),
        (lambda p: p.update(message_type=0), "message_type must be a string"),
        (lambda p: p.pop("private"), "private must be a boolean"),
        (lambda p: p.update(private="maybe"), "private must be a boolean"),
        (lambda p: p.update(private=2), "private must be a boolean"),
        (lambda p: p.pop("conversation"), "conversation must be an object"),
        (lambda p: p.update(conversation=[318]), "conversation must be an object"),
        (lambda p: p["conversation"].pop("id"), "conversation.id must be a positive integer id"),
        (
            lambda p: p["conversation"].update(id="318"),
            "conversation.id must be a positive integer id",
        ),
    ],
)
def test_a_malformed_message_names_the_field(mutate: Any, field: str) -> None:
    payload = incoming()
    mutate(payload)
    with pytest.raises(PayloadError) as raised:
        classify_event(payload)
    assert str(raised.value) == field


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"event": None},
        {"event": 7},
        {"event": "contact_created", "id": 1},
        {"event": "webwidget_triggered"},
        {"event": "conversation_typing_on", "conversation": {"id": 1}},
        {"event": "conversation_created", "id": 318, "status": "pending"},
        {"event": "inbox_updated"},
    ],
)
def test_events_we_do_not_handle_are_ignored(payload: dict[str, Any]) -> None:
    decision = classify_event(payload)
    assert (decision.action, decision.reason) == (EventAction.IGNORE, "event_not_handled")


def test_message_updated_is_ignored_even_when_malformed() -> None:
    decision = classify_event({"event": "message_updated", "conversation": "x"})
    assert (decision.action, decision.reason, decision.conversation_id) == (
        EventAction.IGNORE,
        "message_updated",
        None,
    )


@pytest.mark.parametrize(
    "event",
    [
        "conversation_status_changed",
        "conversation_updated",
        "conversation_opened",
        "conversation_resolved",
    ],
)
@pytest.mark.parametrize("status", ["open", "resolved", "snoozed"])
def test_a_conversation_leaving_pending_is_a_takeover(event: str, status: str) -> None:
    payload = {"event": event, "id": 318, "status": status, "meta": {"assignee_type": None}}
    decision = classify_event(payload)
    assert decision == EventDecision(
        EventAction.HUMAN_TAKEOVER, "conversation_opened", event, 318, None
    )


@pytest.mark.parametrize("status", ["pending", "open"])
def test_a_human_assignee_is_a_takeover(status: str) -> None:
    payload = {
        "event": "conversation_updated",
        "id": 318,
        "status": status,
        "meta": {"assignee_type": "User"},
    }
    assert classify_event(payload).reason == "human_assigned"


@pytest.mark.parametrize("assignee_type", [None, "AgentBot"])
def test_a_pending_conversation_update_is_ignored(assignee_type: str | None) -> None:
    payload = {
        "event": "conversation_updated",
        "id": 318,
        "status": "pending",
        "meta": {"assignee_type": assignee_type},
    }
    decision = classify_event(payload)
    assert (decision.action, decision.reason) == (EventAction.IGNORE, "conversation_pending")


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"event": "conversation_updated", "status": "open"}, "id must be a positive integer id"),
        (
            {"event": "conversation_updated", "id": "318", "status": "open"},
            "id must be a positive integer id",
        ),
        ({"event": "conversation_status_changed", "id": 318}, "status must be a string"),
    ],
)
def test_a_malformed_conversation_change_names_the_field(
    payload: dict[str, Any], message: str
) -> None:
    with pytest.raises(PayloadError, match=message):
        classify_event(payload)


# --- property tests ------------------------------------------------------------------------------

_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from(["pending", "open", "incoming", "outgoing", "user", "agent_bot", "User"]),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=25,
)
_event_names = st.sampled_from(
    [
        "message_created",
        "message_updated",
        "conversation_created",
        "conversation_updated",
        "conversation_status_changed",
        "conversation_opened",
        "conversation_resolved",
        "contact_created",
    ]
)


def _classify_or_payload_error(payload: Any) -> None:
    try:
        decision = classify_event(payload)
    except PayloadError as error:
        assert str(error)
    else:
        assert isinstance(decision.action, EventAction)
        assert decision.reason
        assert (decision.action is EventAction.ANSWER) == (decision.message is not None)


@given(
    st.dictionaries(st.text(max_size=12), _json_values, max_size=6),
    st.one_of(st.none(), _event_names),
)
def test_arbitrary_json_objects_raise_nothing_but_payload_errors(
    payload: dict[str, Any], event: str | None
) -> None:
    if event is not None:
        payload["event"] = event
    _classify_or_payload_error(payload)


_TOP_KEYS = sorted(_INCOMING) or ["id"]
_CONVERSATION_KEYS = sorted(_INCOMING.get("conversation", {})) or ["id"]
_mutation = st.tuples(
    st.booleans(),  # in the conversation, or at the top level
    st.sampled_from(_TOP_KEYS),
    st.sampled_from(_CONVERSATION_KEYS),
    st.one_of(st.just("delete"), _json_values),
)


@given(st.lists(_mutation, min_size=1, max_size=5))
def test_mutated_customer_messages_raise_nothing_but_payload_errors(
    mutations: list[tuple[bool, str, str, Any]],
) -> None:
    payload = incoming()
    for in_conversation, top_key, conversation_key, value in mutations:
        target = payload.get("conversation") if in_conversation else payload
        if not isinstance(target, dict):
            continue
        key = conversation_key if in_conversation else top_key
        if value == "delete":
            target.pop(key, None)
        else:
            target[key] = value
    _classify_or_payload_error(payload)
