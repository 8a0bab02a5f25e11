"""The lead form against the Chatwoot sandbox: a resubmission replaces the profile only when it
proves it is the same person (the e-mail and the phone that wrote it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.adapters.chatwoot import ChatwootClient
from app.adapters.chatwoot_gateway import ChatwootGateway
from app.adapters.http_pool import PooledHttp
from app.domain.lead import parse_lead_form
from app.domain.personas import PERSONAS
from app.sandbox.chatwoot import ChatwootSandbox
from app.services.leads import LeadIntake, LeadResult
from app.store.sqlite import SqliteStore
from tests.support.fixtures import lead_form

VICTIM = {"name": "Tan Wei Ming", "email": "weiming.tan@example.com", "phone": "+6591234567"}


class RecordingQueue:
    def __init__(self) -> None:
        self.prepared: list[str] = []

    def enqueue_prepare(self, job_id: str, *, at: float | None = None) -> None:
        self.prepared.append(job_id)

    def enqueue_respond(self, job_id: str, *, at: float | None = None) -> None:
        raise AssertionError("the lead form only queues greetings")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    instance = SqliteStore(tmp_path / "store.db")
    instance.init_schema()
    instance.seed_brokers(PERSONAS, max_concurrent_chats=10)
    yield instance
    instance.close()


@pytest.fixture
def queue() -> RecordingQueue:
    return RecordingQueue()


@pytest.fixture
def intake(
    chatwoot: ChatwootSandbox, store: SqliteStore, queue: RecordingQueue
) -> Iterator[LeadIntake]:
    http = PooledHttp(chatwoot.url, timeout_s=5, connect_timeout_s=5, max_idle=2)
    client = ChatwootClient(
        http,
        base_url=chatwoot.url,
        account_id=chatwoot.installation.account_id,
        api_token="sandbox-user-token",
        bot_token="sandbox-bot-token",
    )
    yield LeadIntake(store, queue, ChatwootGateway(client), inbox_id=chatwoot.inbox_id)
    http.close()


def submit(intake: LeadIntake, **fields: object) -> LeadResult:
    return intake.submit(parse_lead_form(lead_form(**{**VICTIM, **fields})))


def stored_profile(store: SqliteStore, conversation_id: int) -> dict[str, object]:
    conversation = store.get_conversation(conversation_id)
    assert conversation is not None and conversation.lead_profile is not None
    return conversation.lead_profile


def notes(chatwoot: ChatwootSandbox, conversation_id: int) -> list[str]:
    return [m["content"] for m in chatwoot.messages(conversation_id) if m["private"]]


def test_the_same_person_resubmitting_updates_the_profile(
    intake: LeadIntake, store: SqliteStore, chatwoot: ChatwootSandbox, queue: RecordingQueue
) -> None:
    first = submit(intake, actualIncomes=[6000])
    assert (first.profile, first.greeting, first.reused) == ("saved", "queued", False)
    # The same e-mail in other case and the same phone: the same person, with a new income.
    again = submit(intake, email="WeiMing.Tan@Example.com", actualIncomes=[9000])
    assert again.conversation_id == first.conversation_id and again.reused
    assert again.profile == "saved"
    assert stored_profile(store, first.conversation_id)["monthly_income"] == 9000
    assert notes(chatwoot, first.conversation_id) == []
    assert len(queue.prepared) == 1


@pytest.mark.parametrize(
    "stranger",
    [
        pytest.param({"email": "someone.else@example.com"}, id="victim's phone, own e-mail"),
        pytest.param({"phone": "+6588887777"}, id="victim's e-mail, own phone"),
    ],
)
def test_someone_else_with_one_of_the_details_changes_nothing_the_customer_sees(
    intake: LeadIntake,
    store: SqliteStore,
    chatwoot: ChatwootSandbox,
    queue: RecordingQueue,
    stranger: dict[str, str],
) -> None:
    first = submit(intake, actualIncomes=[6000])
    before = stored_profile(store, first.conversation_id)
    assert queue.prepared  # the victim's own greeting
    queue.prepared.clear()

    impostor = submit(intake, name="Mallory Lim", actualIncomes=[250000], **stranger)

    assert impostor.conversation_id == first.conversation_id
    assert (impostor.profile, impostor.greeting) == ("kept", "skipped")
    assert stored_profile(store, first.conversation_id) == before
    conversation = store.get_conversation(first.conversation_id)
    assert conversation is not None and conversation.lead_score == first.lead_score
    assert queue.prepared == []
    (note,) = notes(chatwoot, first.conversation_id)
    assert "Mallory Lim" in note and "not changed" in note
    assert not [m for m in chatwoot.messages(first.conversation_id) if not m["private"]]


def test_a_profile_from_before_digests_needs_both_details_on_record(
    intake: LeadIntake, store: SqliteStore, chatwoot: ChatwootSandbox
) -> None:
    first = submit(intake)
    legacy = {k: v for k, v in stored_profile(store, first.conversation_id).items()}
    del legacy["contact_digest"]
    store.assign_broker(
        first.conversation_id,
        None,
        contact_id=first.contact_id,
        lead_score=first.lead_score,
        lead_profile=legacy,
        now=0,
    )
    stranger = submit(intake, email="someone.else@example.com", actualIncomes=[1])
    assert stranger.profile == "kept"
    # Both details the contact has in Chatwoot: the same person, so the profile is replaced,
    # and from now on it carries the digest.
    same = submit(intake, actualIncomes=[7000])
    assert same.profile == "saved"
    profile = stored_profile(store, first.conversation_id)
    assert profile["monthly_income"] == 7000 and profile["contact_digest"]
