"""The contract every store backend must pass (app/store/base.py).

`StoreContract` holds the tests; `TestStoreContract` runs them once per backend of the
parametrized `store` fixture. A new backend (Supabase/Postgres) is one more entry in
`BACKENDS`: a factory that returns a fresh, empty store with its schema initialised.

Every method takes `now` explicitly, so the tests drive time by hand from `T0`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.domain.events import InboundMessage
from app.domain.jobs import JobKind, JobState, ReplyJob
from app.domain.personas import PERSONAS
from app.store.base import Store, StoreError
from app.store.models import (
    NOT_DUE,
    ClaimStatus,
    ConversationStatus,
    InboundStatus,
    ReapAction,
    Retention,
    WorkerHeartbeat,
)
from app.store.sqlite import SqliteStore
from tests.support.postgres import shared_supabase_bed

T0 = 1_700_000_000.0
SLUGS = [persona.slug for persona in PERSONAS]
LEASE_S = 30.0
WINDOW_S = 10.0


# -- backends -------------------------------------------------------------------------------
def _sqlite_store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    store = SqliteStore(tmp_path / "store.db")
    store.init_schema()
    return store


def _supabase_store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """supabase-py -> the PostgREST sandbox -> the migration on the local PostgreSQL.

    One database and sandbox for the whole run, emptied before each test (skips without a
    PostgreSQL server, except under CI)."""
    bed = shared_supabase_bed(request.config)
    bed.reset()
    return bed.store()


def _postgres_store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """psycopg -> the migration on the local PostgreSQL (the same database as "supabase")."""
    bed = shared_supabase_bed(request.config)
    bed.reset()
    return bed.direct_store()


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], Store]] = {
    "sqlite": _sqlite_store,
    "postgres": _postgres_store,
    "supabase": _supabase_store,
}


@pytest.fixture(params=list(BACKENDS))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    instance = BACKENDS[request.param](request, tmp_path)
    try:
        yield instance
    finally:
        instance.close()


# -- helpers --------------------------------------------------------------------------------
def make_message(
    message_id: int, conversation_id: int, content: str | None = None
) -> InboundMessage:
    return InboundMessage(
        message_id=message_id,
        conversation_id=conversation_id,
        account_id=1,
        inbox_id=1,
        content=content or f"message {message_id}",
        created_at=None,
        contact_id=None,
        contact_name=None,
    )


def seed(store: Store, capacity: int = 100) -> None:
    assert store.seed_brokers(PERSONAS, max_concurrent_chats=capacity) == 5


def workload(store: Store, broker_id: str) -> int:
    return next(b.current_workload for b in store.list_brokers() if b.id == broker_id)


def new_job(store: Store, message_id: int, conversation_id: int, *, now: float = T0) -> ReplyJob:
    outcome = store.record_inbound(
        make_message(message_id, conversation_id), delivery_id=f"d-{message_id}", now=now
    )
    assert outcome.status is InboundStatus.RECORDED
    assert outcome.job is not None
    return outcome.job


def waiting_job(
    store: Store,
    message_id: int,
    conversation_id: int,
    *,
    now: float = T0,
    delay_s: float = 0.0,
    broker_id: str = "sarah-wong",
) -> ReplyJob:
    job = new_job(store, message_id, conversation_id, now=now)
    prepared = store.prepare_job(
        job.id, broker_id=broker_id, delay_s=delay_s, escalation_reason=None, now=now
    )
    assert prepared is not None
    return prepared


def running_job(
    store: Store,
    message_id: int,
    conversation_id: int,
    *,
    now: float = T0,
    owner: str = "w1",
    lease_s: float = LEASE_S,
) -> ReplyJob:
    job = waiting_job(store, message_id, conversation_id, now=now)
    claim = store.claim_job(job.id, owner=owner, lease_s=lease_s, coalesce_window_s=0.0, now=now)
    assert claim.status is ClaimStatus.CLAIMED
    assert claim.job is not None
    return claim.job


def job(store: Store, job_id: str) -> ReplyJob:
    found = store.get_job(job_id)
    assert found is not None
    return found


def job_count(store: Store) -> int:
    return sum(store.job_state_counts().values())


# -- the contract ---------------------------------------------------------------------------
class StoreContract:
    # -- lifecycle -------------------------------------------------------------------------
    def test_ping_after_init_and_init_is_idempotent(self, store: Store) -> None:
        store.ping()
        store.init_schema()
        store.ping()

    # -- brokers ---------------------------------------------------------------------------
    def test_seed_brokers_inserts_five_then_none(self, store: Store) -> None:
        assert store.seed_brokers(PERSONAS, max_concurrent_chats=3) == 5
        assert store.seed_brokers(PERSONAS, max_concurrent_chats=7) == 0
        brokers = store.list_brokers()
        assert [b.id for b in brokers] == SLUGS
        # Seeding again leaves existing brokers as they were.
        assert {b.max_concurrent_chats for b in brokers} == {3}

    def test_list_brokers_fields(self, store: Store) -> None:
        seed(store, capacity=4)
        brokers = store.list_brokers()
        assert len(brokers) == 5
        for broker, persona in zip(brokers, PERSONAS, strict=True):
            assert broker.id == persona.slug
            assert broker.name == persona.name
            assert broker.persona_type == persona.type.value
            assert broker.title == persona.title
            assert broker.specialty == persona.specialty
            assert broker.is_active is True
            assert broker.current_workload == 0
            assert broker.max_concurrent_chats == 4
            assert broker.total_conversations == 0
            assert broker.messages_handled == 0
            assert broker.handoffs == 0
            assert broker.at_capacity is False

    def test_assign_broker_takes_preferred_broker_with_room(self, store: Store) -> None:
        seed(store)
        conversation = store.assign_broker(
            7, "grace-lim", contact_id=70, lead_score=55, lead_profile={"a": 1}, now=T0
        )
        assert conversation.conversation_id == 7
        assert conversation.broker_id == "grace-lim"
        assert conversation.contact_id == 70
        assert conversation.lead_score == 55
        assert conversation.lead_profile == {"a": 1}
        assert conversation.status is ConversationStatus.BOT
        assert conversation.message_count == 0
        assert conversation.greeting_job_id is None
        assert conversation.assigned_at == T0
        assert store.get_conversation(7) == conversation
        totals = {b.id: b.total_conversations for b in store.list_brokers()}
        assert totals == {slug: int(slug == "grace-lim") for slug in SLUGS}

    def test_assign_broker_returns_existing_assignment(self, store: Store) -> None:
        seed(store)
        first = store.assign_broker(7, "grace-lim", lead_score=10, now=T0)
        again = store.assign_broker(7, "michelle-chen", now=T0 + 5)
        assert again == first
        # A new lead profile updates the assignment, but never moves it to another broker.
        updated = store.assign_broker(
            7, "rachel-tan", contact_id=71, lead_score=80, lead_profile={"b": 2}, now=T0 + 9
        )
        assert updated.broker_id == "grace-lim"
        assert updated.lead_profile == {"b": 2}
        assert updated.lead_score == 80
        assert updated.contact_id == 71
        assert updated.assigned_at == T0
        assert store.get_conversation(7) == updated
        totals = {b.id: b.total_conversations for b in store.list_brokers()}
        assert totals["grace-lim"] == 1
        assert sum(totals.values()) == 1

    def test_assign_broker_takes_least_loaded_when_preferred_is_full(self, store: Store) -> None:
        seed(store, capacity=2)
        loads = {"michelle-chen": 1, "jasmine-lee": 1, "rachel-tan": 1, "sarah-wong": 2}
        message_id = 100
        for broker_id, n in loads.items():
            for _ in range(n):
                message_id += 1
                held = new_job(store, message_id, message_id)
                assert store.hold_capacity(held.id, broker_id, now=T0)
        assert workload(store, "sarah-wong") == 2
        assert store.assign_broker(1, "sarah-wong", now=T0).broker_id == "grace-lim"
        # No preference, or an unknown one: the least-loaded broker as well.
        assert store.assign_broker(2, None, now=T0).broker_id == "grace-lim"
        assert store.assign_broker(3, "nobody", now=T0).broker_id == "grace-lim"

    def test_assign_broker_takes_preferred_when_all_are_full(self, store: Store) -> None:
        seed(store, capacity=1)
        for index, broker_id in enumerate(SLUGS):
            held = new_job(store, 200 + index, 200 + index)
            assert store.hold_capacity(held.id, broker_id, now=T0)
        assert all(b.at_capacity for b in store.list_brokers())
        assert store.assign_broker(1, "rachel-tan", now=T0).broker_id == "rachel-tan"

    def test_assign_broker_without_brokers_raises(self, store: Store) -> None:
        with pytest.raises(StoreError):
            store.assign_broker(1, "sarah-wong", now=T0)
        assert store.get_conversation(1) is None

    # -- capacity --------------------------------------------------------------------------
    def test_hold_capacity_counts_each_job_once(self, store: Store) -> None:
        seed(store)
        j1 = new_job(store, 1, 1)
        j2 = new_job(store, 2, 2)
        assert store.hold_capacity(j1.id, "sarah-wong", now=T0)
        assert store.hold_capacity(j1.id, "sarah-wong", now=T0)
        assert workload(store, "sarah-wong") == 1
        assert store.hold_capacity(j2.id, "sarah-wong", now=T0)
        assert workload(store, "sarah-wong") == 2
        held = job(store, j1.id)
        assert held.capacity_held is True
        assert held.broker_id == "sarah-wong"

    def test_release_capacity_counts_each_job_once(self, store: Store) -> None:
        seed(store)
        j1 = new_job(store, 1, 1)
        j2 = new_job(store, 2, 2)
        store.hold_capacity(j1.id, "sarah-wong", now=T0)
        store.hold_capacity(j2.id, "sarah-wong", now=T0)
        store.release_capacity(j1.id, now=T0)
        store.release_capacity(j1.id, now=T0)
        assert workload(store, "sarah-wong") == 1
        assert job(store, j1.id).capacity_held is False
        store.release_capacity(j2.id, now=T0)
        store.release_capacity(j2.id, now=T0)
        assert workload(store, "sarah-wong") == 0
        # Releasing a job that never held capacity changes nothing, and never goes below 0.
        j3 = new_job(store, 3, 3)
        store.release_capacity(j3.id, now=T0)
        assert workload(store, "sarah-wong") == 0

    def test_hold_capacity_refuses_when_full(self, store: Store) -> None:
        seed(store, capacity=2)
        jobs = [new_job(store, n, n) for n in (1, 2, 3)]
        assert store.hold_capacity(jobs[0].id, "sarah-wong", now=T0)
        assert store.hold_capacity(jobs[1].id, "sarah-wong", now=T0)
        assert store.hold_capacity(jobs[2].id, "sarah-wong", now=T0) is False
        assert workload(store, "sarah-wong") == 2
        assert job(store, jobs[2].id).capacity_held is False
        # A job that already holds its slot is still "held" when the broker is full.
        assert store.hold_capacity(jobs[0].id, "sarah-wong", now=T0)
        # Another broker is not affected.
        assert store.hold_capacity(jobs[2].id, "grace-lim", now=T0)
        store.release_capacity(jobs[0].id, now=T0)
        assert workload(store, "sarah-wong") == 1

    def test_hold_capacity_refuses_finished_jobs(self, store: Store) -> None:
        # A job cancelled (skipped, merged, ...) between a pipeline's read and its hold must
        # not take a slot: nothing would ever release it.
        seed(store)
        cancelled = new_job(store, 1, 1)
        assert store.finish_job(cancelled.id, owner=None, state=JobState.CANCELLED, now=T0)
        assert store.hold_capacity(cancelled.id, "sarah-wong", now=T0) is False
        assert workload(store, "sarah-wong") == 0
        assert job(store, cancelled.id).capacity_held is False

    def test_hold_capacity_for_unknown_job_raises(self, store: Store) -> None:
        seed(store)
        with pytest.raises(StoreError):
            store.hold_capacity("no-such-job", "sarah-wong", now=T0)
        assert workload(store, "sarah-wong") == 0

    def test_finish_job_releases_capacity(self, store: Store) -> None:
        seed(store)
        running = running_job(store, 1, 1)
        cancelled = new_job(store, 2, 2)
        store.hold_capacity(running.id, "sarah-wong", now=T0)
        store.hold_capacity(cancelled.id, "sarah-wong", now=T0)
        assert store.finish_job(running.id, owner="w1", state=JobState.SENT, now=T0 + 1)
        assert workload(store, "sarah-wong") == 1
        assert store.finish_job(cancelled.id, owner=None, state=JobState.CANCELLED, now=T0 + 1)
        assert workload(store, "sarah-wong") == 0
        assert job(store, running.id).capacity_held is False
        assert job(store, cancelled.id).capacity_held is False

    def test_merge_releases_capacity_of_merged_jobs(self, store: Store) -> None:
        seed(store)
        m1 = waiting_job(store, 1, 9, now=T0)
        m2 = waiting_job(store, 2, 9, now=T0 + 1)
        m3 = waiting_job(store, 3, 9, now=T0 + 2)
        for m in (m1, m2, m3):
            assert store.hold_capacity(m.id, "sarah-wong", now=T0 + 2)
        assert workload(store, "sarah-wong") == 3
        deferred = store.claim_job(
            m1.id, owner="w1", lease_s=LEASE_S, coalesce_window_s=WINDOW_S, now=T0 + 3
        )
        assert deferred.status is ClaimStatus.DEFERRED
        assert workload(store, "sarah-wong") == 2
        claimed = store.claim_job(
            m3.id, owner="w1", lease_s=LEASE_S, coalesce_window_s=WINDOW_S, now=T0 + 4
        )
        assert claimed.status is ClaimStatus.CLAIMED
        assert workload(store, "sarah-wong") == 1
        assert [job(store, m.id).capacity_held for m in (m1, m2, m3)] == [False, False, True]

    # -- record_inbound --------------------------------------------------------------------
    def test_record_inbound_records_a_queued_job(self, store: Store) -> None:
        outcome = store.record_inbound(
            make_message(11, 5, "I want to refinance"), delivery_id="d-11", now=T0
        )
        assert outcome.status is InboundStatus.RECORDED
        recorded = outcome.job
        assert recorded is not None
        assert recorded.kind is JobKind.REPLY
        assert recorded.state is JobState.QUEUED
        assert recorded.conversation_id == 5
        assert recorded.inbound_message_id == 11
        assert recorded.inbound_content == "I want to refinance"
        assert recorded.delivery_id == "d-11"
        assert recorded.received_at == T0
        assert recorded.attempts == 0
        assert recorded.capacity_held is False
        assert recorded.merged_into is None
        assert recorded.lease_owner is None
        assert recorded.due_at is None
        assert store.get_job(recorded.id) == recorded
        assert store.job_state_counts() == {"queued": 1}

    def test_record_inbound_stamps_the_conversation(self, store: Store) -> None:
        seed(store)
        store.assign_broker(5, "sarah-wong", now=T0)
        new_job(store, 11, 5, now=T0 + 3)
        conversation = store.get_conversation(5)
        assert conversation is not None
        assert conversation.last_customer_message_at == T0 + 3

    def test_record_inbound_dedupes_on_delivery_id(self, store: Store) -> None:
        first = store.record_inbound(make_message(11, 5), delivery_id="d-1", now=T0)
        assert first.status is InboundStatus.RECORDED
        again = store.record_inbound(make_message(11, 5), delivery_id="d-1", now=T0 + 1)
        assert again.status is InboundStatus.DUPLICATE
        assert again.reason == "delivery_already_received"
        assert again.job is None
        # The delivery id alone is enough, even for another message id.
        other = store.record_inbound(make_message(12, 5), delivery_id="d-1", now=T0 + 2)
        assert other.status is InboundStatus.DUPLICATE
        assert other.reason == "delivery_already_received"
        assert job_count(store) == 1

    def test_record_inbound_dedupes_on_message_id(self, store: Store) -> None:
        store.record_inbound(make_message(11, 5), delivery_id="d-1", now=T0)
        again = store.record_inbound(make_message(11, 5), delivery_id="d-2", now=T0 + 1)
        assert again.status is InboundStatus.DUPLICATE
        assert again.reason == "message_already_received"
        assert again.job is None
        assert job_count(store) == 1

    def test_record_inbound_without_delivery_id_dedupes_on_message_id(self, store: Store) -> None:
        first = store.record_inbound(make_message(11, 5), delivery_id=None, now=T0)
        assert first.status is InboundStatus.RECORDED
        assert first.job is not None
        assert first.job.delivery_id is None
        again = store.record_inbound(make_message(11, 5), delivery_id=None, now=T0 + 1)
        assert again.status is InboundStatus.DUPLICATE
        assert again.reason == "message_already_received"
        # A message seen first without a delivery id is still a duplicate with one.
        third = store.record_inbound(make_message(11, 5), delivery_id="d-3", now=T0 + 2)
        assert third.status is InboundStatus.DUPLICATE
        assert third.reason == "message_already_received"
        assert job_count(store) == 1
        # Another message without a delivery id is recorded.
        other = store.record_inbound(make_message(12, 5), delivery_id=None, now=T0 + 3)
        assert other.status is InboundStatus.RECORDED
        assert job_count(store) == 2

    @pytest.mark.parametrize("status", [ConversationStatus.HANDED_OFF, ConversationStatus.HUMAN])
    def test_record_inbound_ignores_conversations_a_human_has(
        self, store: Store, status: ConversationStatus
    ) -> None:
        seed(store)
        store.assign_broker(5, "sarah-wong", now=T0)
        store.set_conversation_status(5, status, "test", now=T0)
        outcome = store.record_inbound(make_message(11, 5), delivery_id="d-1", now=T0 + 1)
        assert outcome.status is InboundStatus.IGNORED
        assert outcome.reason == f"conversation_{status.value}"
        assert outcome.job is None
        assert job_count(store) == 0
        # Other conversations are unaffected.
        assert store.record_inbound(make_message(12, 6), delivery_id="d-2", now=T0 + 1).job

    def test_human_takeover_before_assignment_is_remembered(self, store: Store) -> None:
        seed(store)
        store.set_conversation_status(5, ConversationStatus.HUMAN, "human_reply", now=T0)
        outcome = store.record_inbound(make_message(11, 5), delivery_id="d-1", now=T0 + 1)
        assert outcome.status is InboundStatus.IGNORED

    # -- conversation status ---------------------------------------------------------------
    def test_set_conversation_status_skips_unsent_jobs(self, store: Store) -> None:
        seed(store)
        store.assign_broker(5, "sarah-wong", now=T0)
        running = running_job(store, 1, 5, now=T0)
        queued = new_job(store, 2, 5, now=T0 + 1)
        waiting = waiting_job(store, 3, 5, now=T0 + 2, delay_s=30)
        elsewhere = new_job(store, 4, 6, now=T0 + 2)
        for held in (running, queued, waiting, elsewhere):
            assert store.hold_capacity(held.id, "sarah-wong", now=T0 + 2)
        assert workload(store, "sarah-wong") == 4

        skipped = store.set_conversation_status(
            5, ConversationStatus.HANDED_OFF, "frustration", now=T0 + 5
        )
        assert sorted(skipped) == sorted([queued.id, waiting.id])
        for job_id in skipped:
            gone = job(store, job_id)
            assert gone.state is JobState.SKIPPED
            assert gone.capacity_held is False
            assert gone.finished_at == T0 + 5
        assert job(store, running.id).state is JobState.RUNNING
        assert job(store, running.id).capacity_held is True
        assert job(store, elsewhere.id).state is JobState.QUEUED
        assert workload(store, "sarah-wong") == 2
        conversation = store.get_conversation(5)
        assert conversation is not None
        assert conversation.status is ConversationStatus.HANDED_OFF
        assert conversation.handoff_reason == "frustration"
        # Nothing left to skip the second time.
        assert store.set_conversation_status(5, ConversationStatus.HUMAN, "x", now=T0 + 6) == []

    def test_human_after_handoff_keeps_handed_off(self, store: Store) -> None:
        seed(store)
        store.assign_broker(5, "sarah-wong", now=T0)
        store.set_conversation_status(5, ConversationStatus.HANDED_OFF, "asked", now=T0)
        store.set_conversation_status(5, ConversationStatus.HUMAN, "human_reply", now=T0 + 1)
        conversation = store.get_conversation(5)
        assert conversation is not None
        assert conversation.status is ConversationStatus.HANDED_OFF
        assert conversation.handoff_reason == "asked"

    def test_human_takes_a_bot_conversation(self, store: Store) -> None:
        seed(store)
        store.assign_broker(5, "sarah-wong", now=T0)
        store.set_conversation_status(5, ConversationStatus.HUMAN, "human_reply", now=T0)
        conversation = store.get_conversation(5)
        assert conversation is not None
        assert conversation.status is ConversationStatus.HUMAN

    def test_record_delivered_reply_counts_messages_and_handoffs(self, store: Store) -> None:
        seed(store)
        store.assign_broker(5, "sarah-wong", now=T0)
        store.record_delivered_reply(
            5, "sarah-wong", customer_messages=3, handoff_reason=None, now=T0 + 1
        )
        store.record_delivered_reply(
            5, "sarah-wong", customer_messages=1, handoff_reason="frustration", now=T0 + 2
        )
        conversation = store.get_conversation(5)
        assert conversation is not None
        assert conversation.message_count == 4
        assert conversation.last_reply_at == T0 + 2
        sarah = next(b for b in store.list_brokers() if b.id == "sarah-wong")
        assert sarah.messages_handled == 4
        assert sarah.handoffs == 1

    # -- greeting jobs ---------------------------------------------------------------------
    def test_create_greeting_job(self, store: Store) -> None:
        seed(store)
        store.assign_broker(5, "sarah-wong", now=T0)
        greeting = store.create_greeting_job(5, "sarah-wong", now=T0 + 1)
        assert greeting.kind is JobKind.GREETING
        assert greeting.state is JobState.QUEUED
        assert greeting.conversation_id == 5
        assert greeting.broker_id == "sarah-wong"
        assert greeting.inbound_message_id is None
        assert greeting.received_at == T0 + 1
        conversation = store.get_conversation(5)
        assert conversation is not None
        assert conversation.greeting_job_id == greeting.id

    # -- prepare ---------------------------------------------------------------------------
    def test_prepare_job_moves_queued_to_waiting_once(self, store: Store) -> None:
        seed(store)
        queued = new_job(store, 1, 5, now=T0)
        prepared = store.prepare_job(
            queued.id,
            broker_id="grace-lim",
            delay_s=4.5,
            escalation_reason="frustration",
            now=T0 + 2,
        )
        assert prepared is not None
        assert prepared.state is JobState.WAITING
        assert prepared.due_at == T0 + 6.5
        assert prepared.delay_s == 4.5
        assert prepared.broker_id == "grace-lim"
        assert prepared.escalation_reason == "frustration"
        assert store.get_job(queued.id) == prepared
        again = store.prepare_job(
            queued.id, broker_id="grace-lim", delay_s=9, escalation_reason=None, now=T0 + 3
        )
        assert again is None
        assert job(store, queued.id).due_at == T0 + 6.5

    # -- claim -----------------------------------------------------------------------------
    def test_claim_job_takes_a_waiting_job_with_a_lease(self, store: Store) -> None:
        waiting = waiting_job(store, 1, 5, now=T0)
        claim = store.claim_job(
            waiting.id, owner="w1", lease_s=LEASE_S, coalesce_window_s=WINDOW_S, now=T0 + 1
        )
        assert claim.status is ClaimStatus.CLAIMED
        assert claim.job is not None
        assert claim.job.state is JobState.RUNNING
        assert claim.job.lease_owner == "w1"
        assert claim.job.lease_expires_at == T0 + 1 + LEASE_S
        assert claim.job.attempts == 1
        assert claim.job.started_at == T0 + 1
        assert [j.id for j in claim.batch] == [waiting.id]
        assert store.get_job(waiting.id) == claim.job

    def test_claim_job_refuses_a_job_before_its_delay_is_over(self, store: Store) -> None:
        waiting = waiting_job(store, 1, 5, now=T0, delay_s=3.0)
        early = store.claim_job(
            waiting.id, owner="w1", lease_s=LEASE_S, coalesce_window_s=WINDOW_S, now=T0 + 2.9
        )
        assert early.status is ClaimStatus.NOT_CLAIMABLE and early.reason == NOT_DUE
        assert store.get_job(waiting.id) == waiting
        due = store.claim_job(
            waiting.id, owner="w1", lease_s=LEASE_S, coalesce_window_s=WINDOW_S, now=T0 + 3.0
        )
        assert due.status is ClaimStatus.CLAIMED

    def test_claim_job_refuses_a_leased_job_until_the_lease_expires(self, store: Store) -> None:
        waiting = waiting_job(store, 1, 5, now=T0)
        store.claim_job(waiting.id, owner="w1", lease_s=LEASE_S, coalesce_window_s=0, now=T0)
        second = store.claim_job(
            waiting.id, owner="w2", lease_s=LEASE_S, coalesce_window_s=0, now=T0 + 10
        )
        assert second.status is ClaimStatus.NOT_CLAIMABLE
        assert job(store, waiting.id).lease_owner == "w1"
        late = store.claim_job(
            waiting.id, owner="w2", lease_s=LEASE_S, coalesce_window_s=0, now=T0 + LEASE_S + 1
        )
        assert late.status is ClaimStatus.CLAIMED
        assert late.job is not None
        assert late.job.attempts == 2
        assert late.job.lease_owner == "w2"
        assert late.job.lease_expires_at == T0 + 2 * LEASE_S + 1
        assert late.job.started_at == T0
        # The first worker lost the job.
        assert store.begin_send(waiting.id, owner="w1", now=T0 + LEASE_S + 2) is None
        assert not store.renew_lease(waiting.id, owner="w1", lease_s=LEASE_S, now=T0 + 40)

    @pytest.mark.parametrize("state", [JobState.QUEUED, JobState.SENT, JobState.CANCELLED])
    def test_claim_job_refuses_jobs_that_are_not_waiting(
        self, store: Store, state: JobState
    ) -> None:
        queued = new_job(store, 1, 5)
        if state is not JobState.QUEUED:
            store.finish_job(queued.id, owner=None, state=state, now=T0)
        claim = store.claim_job(
            queued.id, owner="w1", lease_s=LEASE_S, coalesce_window_s=0, now=T0 + 1
        )
        assert claim.status is ClaimStatus.NOT_CLAIMABLE
        assert job(store, queued.id).state is state
        unknown = store.claim_job("nope", owner="w1", lease_s=LEASE_S, coalesce_window_s=0, now=T0)
        assert unknown.status is ClaimStatus.NOT_CLAIMABLE
        assert unknown.job is None

    def test_burst_within_window_is_answered_once_by_the_newest(self, store: Store) -> None:
        m1 = waiting_job(store, 1, 9, now=T0)
        m2 = waiting_job(store, 2, 9, now=T0 + 1)
        m3 = waiting_job(store, 3, 9, now=T0 + 2)

        first = store.claim_job(
            m1.id, owner="w1", lease_s=LEASE_S, coalesce_window_s=WINDOW_S, now=T0 + 3
        )
        assert first.status is ClaimStatus.DEFERRED
        assert first.job is not None
        assert first.job.id == m1.id
        assert first.job.state is JobState.MERGED
        assert first.job.merged_into == m3.id
        assert first.job.lease_owner is None
        assert job(store, m2.id).state is JobState.WAITING

        newest = store.claim_job(
            m3.id, owner="w2", lease_s=LEASE_S, coalesce_window_s=WINDOW_S, now=T0 + 4
        )
        assert newest.status is ClaimStatus.CLAIMED
        assert newest.job is not None
        assert newest.job.id == m3.id
        assert [j.id for j in newest.batch] == [m1.id, m2.id, m3.id]
        assert [j.inbound_message_id for j in newest.batch] == [1, 2, 3]
        merged_m2 = job(store, m2.id)
        assert merged_m2.state is JobState.MERGED
        assert merged_m2.merged_into == m3.id

        middle = store.claim_job(
            m2.id, owner="w3", lease_s=LEASE_S, coalesce_window_s=WINDOW_S, now=T0 + 5
        )
        assert middle.status is ClaimStatus.NOT_CLAIMABLE
        assert store.job_state_counts() == {"merged": 2, "running": 1}

    def test_burst_outside_window_answers_the_old_message(self, store: Store) -> None:
        m1 = waiting_job(store, 1, 9, now=T0)
        m2 = waiting_job(store, 2, 9, now=T0 + 1)
        m3 = waiting_job(store, 3, 9, now=T0 + 2)
        claim = store.claim_job(
            m1.id, owner="w1", lease_s=LEASE_S, coalesce_window_s=WINDOW_S, now=T0 + WINDOW_S + 1
        )
        assert claim.status is ClaimStatus.CLAIMED
        assert [j.id for j in claim.batch] == [m1.id]
        assert job(store, m2.id).state is JobState.WAITING
        assert job(store, m3.id).state is JobState.WAITING
        assert job(store, m2.id).merged_into is None

    def test_other_conversations_never_merge(self, store: Store) -> None:
        m1 = waiting_job(store, 1, 9, now=T0)
        other = waiting_job(store, 2, 10, now=T0 + 1)
        claim = store.claim_job(
            m1.id, owner="w1", lease_s=LEASE_S, coalesce_window_s=WINDOW_S, now=T0 + 2
        )
        assert claim.status is ClaimStatus.CLAIMED
        later = store.claim_job(
            other.id, owner="w1", lease_s=LEASE_S, coalesce_window_s=WINDOW_S, now=T0 + 2
        )
        assert [j.id for j in later.batch] == [other.id]

    def test_greeting_jobs_never_merge(self, store: Store) -> None:
        seed(store)
        store.assign_broker(9, "sarah-wong", now=T0)
        greeting = store.create_greeting_job(9, "sarah-wong", now=T0)
        store.prepare_job(
            greeting.id, broker_id="sarah-wong", delay_s=0, escalation_reason=None, now=T0
        )
        reply = waiting_job(store, 1, 9, now=T0 + 1)

        # The reply does not absorb the older greeting...
        claim = store.claim_job(
            reply.id, owner="w1", lease_s=LEASE_S, coalesce_window_s=WINDOW_S, now=T0 + 2
        )
        assert claim.status is ClaimStatus.CLAIMED
        assert [j.id for j in claim.batch] == [reply.id]
        assert job(store, greeting.id).state is JobState.WAITING

        # ...and the greeting is not deferred to a newer reply, even within the window.
        reply2 = waiting_job(store, 2, 9, now=T0 + 3)
        greet = store.claim_job(
            greeting.id, owner="w1", lease_s=LEASE_S, coalesce_window_s=WINDOW_S, now=T0 + 4
        )
        assert greet.status is ClaimStatus.CLAIMED
        assert [j.id for j in greet.batch] == [greeting.id]
        assert job(store, reply2.id).state is JobState.WAITING

    def test_job_with_a_send_attempt_never_defers(self, store: Store) -> None:
        m1 = waiting_job(store, 1, 9, now=T0)
        store.claim_job(m1.id, owner="w1", lease_s=5, coalesce_window_s=WINDOW_S, now=T0 + 1)
        assert store.begin_send(m1.id, owner="w1", now=T0 + 2) is not None
        m2 = waiting_job(store, 2, 9, now=T0 + 3)
        # w1 died after starting to send; the lease expires within the coalesce window.
        again = store.claim_job(
            m1.id, owner="w2", lease_s=LEASE_S, coalesce_window_s=WINDOW_S, now=T0 + 7
        )
        assert again.status is ClaimStatus.CLAIMED
        assert again.job is not None
        assert again.job.attempts == 2
        assert again.job.send_started_at == T0 + 2
        assert job(store, m2.id).state is JobState.WAITING

    def test_expired_lease_without_send_attempt_defers_to_newer(self, store: Store) -> None:
        m1 = waiting_job(store, 1, 9, now=T0)
        store.claim_job(m1.id, owner="w1", lease_s=2, coalesce_window_s=WINDOW_S, now=T0 + 1)
        m2 = waiting_job(store, 2, 9, now=T0 + 2)
        again = store.claim_job(
            m1.id, owner="w2", lease_s=LEASE_S, coalesce_window_s=WINDOW_S, now=T0 + 4
        )
        assert again.status is ClaimStatus.DEFERRED
        merged = job(store, m1.id)
        assert merged.state is JobState.MERGED
        assert merged.merged_into == m2.id
        assert merged.lease_owner is None
        claim = store.claim_job(
            m2.id, owner="w2", lease_s=LEASE_S, coalesce_window_s=WINDOW_S, now=T0 + 5
        )
        assert [j.id for j in claim.batch] == [m1.id, m2.id]

    # -- leases and sending ----------------------------------------------------------------
    def test_renew_lease_only_for_owner(self, store: Store) -> None:
        running = running_job(store, 1, 5, now=T0)
        assert store.renew_lease(running.id, owner="w1", lease_s=LEASE_S, now=T0 + 20)
        assert job(store, running.id).lease_expires_at == T0 + 20 + LEASE_S
        assert not store.renew_lease(running.id, owner="w2", lease_s=LEASE_S, now=T0 + 21)
        assert job(store, running.id).lease_expires_at == T0 + 20 + LEASE_S

    def test_begin_send_returns_the_job_before_stamping(self, store: Store) -> None:
        running = running_job(store, 1, 5, now=T0)
        before = store.begin_send(running.id, owner="w1", now=T0 + 2)
        assert before is not None
        assert before.id == running.id
        assert before.send_started_at is None
        assert job(store, running.id).send_started_at == T0 + 2
        second = store.begin_send(running.id, owner="w1", now=T0 + 3)
        assert second is not None
        assert second.send_started_at == T0 + 2
        assert job(store, running.id).send_started_at == T0 + 2

    def test_begin_send_refuses_other_owners_and_jobs_not_running(self, store: Store) -> None:
        running = running_job(store, 1, 5, now=T0)
        assert store.begin_send(running.id, owner="w2", now=T0 + 1) is None
        assert job(store, running.id).send_started_at is None
        waiting = waiting_job(store, 2, 6, now=T0)
        assert store.begin_send(waiting.id, owner="w1", now=T0 + 1) is None
        assert store.finish_job(running.id, owner="w1", state=JobState.SENT, now=T0 + 2)
        assert store.begin_send(running.id, owner="w1", now=T0 + 3) is None
        assert store.begin_send("nope", owner="w1", now=T0 + 3) is None

    # -- finish ----------------------------------------------------------------------------
    def test_finish_job_by_its_owner(self, store: Store) -> None:
        running = running_job(store, 1, 5, now=T0)
        assert not store.finish_job(running.id, owner="w2", state=JobState.SENT, now=T0 + 1)
        assert not store.finish_job(running.id, owner=None, state=JobState.CANCELLED, now=T0 + 1)
        assert job(store, running.id).state is JobState.RUNNING
        assert store.finish_job(
            running.id,
            owner="w1",
            state=JobState.SENT,
            now=T0 + 4,
            reply_text="Hi there",
            reply_message_id=777,
            used_fallback=True,
            fallback_reason="llm_timeout",
        )
        done = job(store, running.id)
        assert done.state is JobState.SENT
        assert done.finished_at == T0 + 4
        assert done.reply_text == "Hi there"
        assert done.reply_message_id == 777
        assert done.used_fallback is True
        assert done.fallback_reason == "llm_timeout"
        assert done.lease_owner is None
        assert done.lease_expires_at is None
        assert done.reply_latency_s == 4
        # A terminal job stays as it is.
        assert not store.finish_job(running.id, owner="w1", state=JobState.FAILED, now=T0 + 5)
        assert not store.finish_job(running.id, owner=None, state=JobState.CANCELLED, now=T0 + 5)
        assert job(store, running.id) == done

    def test_finish_job_records_errors(self, store: Store) -> None:
        running = running_job(store, 1, 5, now=T0)
        assert store.finish_job(
            running.id,
            owner="w1",
            state=JobState.FAILED,
            now=T0 + 1,
            error="chatwoot_5xx",
            error_detail="502 Bad Gateway",
        )
        failed = job(store, running.id)
        assert failed.state is JobState.FAILED
        assert failed.error == "chatwoot_5xx"
        assert failed.reply_message_id is None

    def test_finish_job_without_owner_cancels_unsent_jobs(self, store: Store) -> None:
        queued = new_job(store, 1, 5)
        waiting = waiting_job(store, 2, 6)
        assert store.finish_job(queued.id, owner=None, state=JobState.CANCELLED, now=T0 + 1)
        assert store.finish_job(waiting.id, owner=None, state=JobState.SKIPPED, now=T0 + 1)
        assert job(store, queued.id).state is JobState.CANCELLED
        assert job(store, waiting.id).state is JobState.SKIPPED
        assert job(store, queued.id).finished_at == T0 + 1
        assert not store.finish_job(queued.id, owner=None, state=JobState.SKIPPED, now=T0 + 2)
        assert job(store, queued.id).state is JobState.CANCELLED
        assert not store.finish_job("nope", owner=None, state=JobState.CANCELLED, now=T0)

    @pytest.mark.parametrize("state", [JobState.QUEUED, JobState.WAITING, JobState.RUNNING])
    def test_finish_job_rejects_non_terminal_states(self, store: Store, state: JobState) -> None:
        running = running_job(store, 1, 5, now=T0)
        with pytest.raises(ValueError):
            store.finish_job(running.id, owner="w1", state=state, now=T0 + 1)
        assert job(store, running.id).state is JobState.RUNNING

    # -- retry -----------------------------------------------------------------------------
    def test_retry_job_puts_the_job_back_to_waiting(self, store: Store) -> None:
        running = running_job(store, 1, 5, now=T0)
        assert not store.retry_job(
            running.id, owner="w2", due_at=T0 + 9, error="x", error_detail=None, now=T0 + 1
        )
        assert job(store, running.id).state is JobState.RUNNING
        assert store.retry_job(
            running.id,
            owner="w1",
            due_at=T0 + 9,
            error="llm_timeout",
            error_detail="read timed out",
            now=T0 + 1,
        )
        retried = job(store, running.id)
        assert retried.state is JobState.WAITING
        assert retried.due_at == T0 + 9
        assert retried.error == "llm_timeout"
        assert retried.lease_owner is None
        assert retried.lease_expires_at is None
        assert retried.attempts == 1
        # Not running any more: a second retry is refused.
        assert not store.retry_job(
            running.id, owner="w1", due_at=T0 + 20, error="x", error_detail=None, now=T0 + 2
        )
        claim = store.claim_job(
            running.id, owner="w2", lease_s=LEASE_S, coalesce_window_s=0, now=T0 + 9
        )
        assert claim.status is ClaimStatus.CLAIMED
        assert claim.job is not None
        assert claim.job.attempts == 2

    # -- reap ------------------------------------------------------------------------------
    def test_reap_returns_lost_jobs_once(self, store: Store) -> None:
        expired = running_job(store, 1, 1, now=T0, lease_s=30)  # lease ends T0 + 30
        stale_queued = new_job(store, 2, 2, now=T0)
        stale_waiting = waiting_job(store, 3, 3, now=T0, delay_s=1)  # due T0 + 1
        fresh_queued = new_job(store, 4, 4, now=T0 + 95)
        live = running_job(store, 5, 5, now=T0 + 90, lease_s=30)  # lease ends T0 + 120
        not_due = waiting_job(store, 6, 6, now=T0 + 95, delay_s=100)
        overdue_fresh = waiting_job(store, 7, 7, now=T0 + 50, delay_s=1)  # due T0 + 51
        done = running_job(store, 8, 8, now=T0, lease_s=30)
        store.finish_job(done.id, owner="w1", state=JobState.SENT, now=T0 + 1)

        now = T0 + 100
        reaped = store.reap(now=now, stale_after_s=60)
        assert {r.job_id: (r.action, r.due_at) for r in reaped} == {
            expired.id: (ReapAction.RESPOND, now),
            stale_queued.id: (ReapAction.PREPARE, None),
            stale_waiting.id: (ReapAction.RESPOND, T0 + 1),
        }
        requeued = job(store, expired.id)
        assert requeued.state is JobState.WAITING
        assert requeued.lease_owner is None
        assert requeued.due_at == now
        assert job(store, stale_queued.id).state is JobState.QUEUED
        assert job(store, stale_waiting.id).state is JobState.WAITING
        untouched = [fresh_queued, live, not_due, overdue_fresh]
        assert all(job(store, j.id).state is j.state for j in untouched)

        assert store.reap(now=now + 1, stale_after_s=60) == []
        # The re-queued job can be claimed by another worker.
        claim = store.claim_job(
            expired.id, owner="w2", lease_s=LEASE_S, coalesce_window_s=0, now=now + 1
        )
        assert claim.status is ClaimStatus.CLAIMED
        assert claim.job is not None
        assert claim.job.attempts == 2

    def test_reap_respects_limit(self, store: Store) -> None:
        for n in range(5):
            new_job(store, n, n, now=T0)
        assert len(store.reap(now=T0 + 100, stale_after_s=60, limit=2)) == 2
        assert len(store.reap(now=T0 + 100, stale_after_s=60, limit=10)) == 3

    # -- send rate -------------------------------------------------------------------------
    def test_acquire_send_slot_at_ten_per_second(self, store: Store) -> None:
        start = T0 + 0.25
        assert [store.acquire_send_slot(10, now=start + i * 0.01) for i in range(10)] == [0.0] * 10
        wait = store.acquire_send_slot(10, now=start + 0.1)
        assert 0 < wait < 1
        assert wait == pytest.approx(0.65)
        assert store.acquire_send_slot(10, now=T0 + 0.99) > 0
        assert store.acquire_send_slot(10, now=T0 + 1.0) == 0.0
        assert [store.acquire_send_slot(10, now=T0 + 1.5) for _ in range(9)] == [0.0] * 9
        assert store.acquire_send_slot(10, now=T0 + 1.6) > 0

    def test_acquire_send_slot_below_one_per_second(self, store: Store) -> None:
        # 0.5/s: one send per 2-second window.
        assert store.acquire_send_slot(0.5, now=T0 + 0.5) == 0.0
        wait = store.acquire_send_slot(0.5, now=T0 + 1.0)
        assert wait == pytest.approx(1.0)
        assert store.acquire_send_slot(0.5, now=T0 + 1.9) > 0
        assert store.acquire_send_slot(0.5, now=T0 + 2.0) == 0.0
        assert store.acquire_send_slot(0.5, now=T0 + 3.9) > 0

    # -- runtime state ---------------------------------------------------------------------
    def test_heartbeat_and_live_workers(self, store: Store) -> None:
        a = WorkerHeartbeat("w-a", "host-1", 101, 8, started_at=T0, seen_at=T0)
        b = WorkerHeartbeat("w-b", "host-2", 202, 4, started_at=T0 + 1, seen_at=T0 + 1)
        store.heartbeat(a)
        store.heartbeat(b)
        assert store.live_workers(since=T0) == [a, b]
        assert store.live_workers(since=T0 + 0.5) == [b]
        store.heartbeat(WorkerHeartbeat("w-a", "host-1", 101, 8, started_at=T0, seen_at=T0 + 60))
        live = store.live_workers(since=T0 + 30)
        assert [w.worker_id for w in live] == ["w-a"]
        assert live[0].seen_at == T0 + 60
        assert live[0].started_at == T0
        assert store.live_workers(since=T0 + 61) == []

    def test_counters(self, store: Store) -> None:
        assert store.counters("webhooks") == {}
        store.count("webhooks", "accepted:customer_message")
        store.count("webhooks", "accepted:customer_message")
        store.count("webhooks", "duplicate:message_already_received", 3)
        store.count("other", "x")
        assert store.counters("webhooks") == {
            "accepted:customer_message": 2,
            "duplicate:message_already_received": 3,
        }
        assert store.counters("other") == {"x": 1}

    def test_job_state_counts(self, store: Store) -> None:
        assert store.job_state_counts() == {}
        new_job(store, 1, 1)
        new_job(store, 2, 2)
        waiting_job(store, 3, 3)
        running_job(store, 4, 4)
        cancelled = new_job(store, 5, 5)
        store.finish_job(cancelled.id, owner=None, state=JobState.CANCELLED, now=T0)
        assert store.job_state_counts() == {
            "queued": 2,
            "waiting": 1,
            "running": 1,
            "cancelled": 1,
        }

    def test_reply_latency_histogram(self, store: Store) -> None:
        sent = running_job(store, 1, 1, now=T0)
        store.finish_job(sent.id, owner="w1", state=JobState.SENT, now=T0 + 3, reply_message_id=1)
        handed = running_job(store, 2, 2, now=T0 + 10)
        store.finish_job(
            handed.id, owner="w1", state=JobState.HANDED_OFF, now=T0 + 15, reply_message_id=2
        )
        failed = running_job(store, 3, 3, now=T0)
        store.finish_job(failed.id, owner="w1", state=JobState.FAILED, now=T0 + 20)
        bounds = (1.0, 3.0, 4.0, 10.0)
        everything = store.reply_latency_histogram(since=T0, bounds_s=bounds)
        # Sent replies only (3 s and 5 s); cumulative per upper bound, as Prometheus counts.
        assert everything.cumulative == (0, 1, 1, 2)
        assert (everything.count, everything.sum_s) == (2, 8.0)
        later = store.reply_latency_histogram(since=T0 + 10, bounds_s=bounds)
        assert (later.cumulative, later.count, later.sum_s) == ((0, 0, 0, 1), 1, 5.0)
        none = store.reply_latency_histogram(since=T0 + 16, bounds_s=bounds)
        assert (none.cumulative, none.count, none.sum_s) == ((0, 0, 0, 0), 0, 0.0)

    def test_prune_forgets_old_deliveries(self, store: Store) -> None:
        new_job(store, 1, 1, now=T0)  # delivery d-1
        store.record_inbound(make_message(2, 1), delivery_id="d-2", now=T0 + 1000)
        store.prune(now=T0 + 1500, retention=Retention(deliveries_s=1000))
        # d-1 is forgotten: a (new) message under it is accepted again; d-2 is remembered.
        again = store.record_inbound(make_message(3, 1), delivery_id="d-1", now=T0 + 1500)
        assert again.status is InboundStatus.RECORDED
        kept = store.record_inbound(make_message(4, 1), delivery_id="d-2", now=T0 + 1500)
        assert kept.status is InboundStatus.DUPLICATE
        assert kept.reason == "delivery_already_received"
        # Message ids are never forgotten: jobs are the message dedupe.
        old = store.record_inbound(make_message(1, 1), delivery_id="d-9", now=T0 + 1500)
        assert old.status is InboundStatus.DUPLICATE
        assert old.reason == "message_already_received"

    def test_prune_clears_old_payloads_then_drops_old_jobs(self, store: Store) -> None:
        seed(store)
        finished = store.record_inbound(
            make_message(1, 1), delivery_id="d-1", now=T0, payload='{"phone": "+6591234567"}'
        ).job
        assert finished is not None
        store.finish_job(finished.id, owner=None, state=JobState.CANCELLED, now=T0)
        open_job = store.record_inbound(
            make_message(2, 2), delivery_id="d-2", now=T0, payload='{"x": 1}'
        ).job
        assert open_job is not None
        retention = Retention(payloads_s=100, jobs_s=1000)
        store.prune(now=T0 + 500, retention=retention)
        assert job(store, finished.id).inbound_payload is None
        assert job(store, open_job.id).inbound_payload == '{"x": 1}'  # still may go to n8n
        store.prune(now=T0 + 1500, retention=retention)
        assert store.get_job(finished.id) is None
        assert store.get_job(open_job.id) is not None  # unfinished jobs are never dropped

    def test_prune_keeps_the_current_send_window(self, store: Store) -> None:
        assert store.acquire_send_slot(0.5, now=T0 + 100) == 0.0
        store.prune(now=T0 + 101)
        assert store.acquire_send_slot(0.5, now=T0 + 101) > 0

    # -- listing ---------------------------------------------------------------------------
    def test_list_jobs_filters_newest_first(self, store: Store) -> None:
        a = new_job(store, 1, 5, now=T0)
        b = waiting_job(store, 2, 6, now=T0 + 1)
        c = new_job(store, 3, 5, now=T0 + 2)
        d = waiting_job(store, 4, 5, now=T0 + 3)

        def ids(jobs: list[ReplyJob]) -> list[str]:
            return [j.id for j in jobs]

        assert ids(store.list_jobs()) == [d.id, c.id, b.id, a.id]
        assert ids(store.list_jobs(states=[JobState.QUEUED])) == [c.id, a.id]
        assert ids(store.list_jobs(states=[JobState.WAITING, JobState.RUNNING])) == [d.id, b.id]
        assert ids(store.list_jobs(conversation_id=5)) == [d.id, c.id, a.id]
        assert ids(store.list_jobs(states=[JobState.WAITING], conversation_id=5)) == [d.id]
        assert ids(store.list_jobs(limit=2)) == [d.id, c.id]
        assert store.list_jobs(states=[JobState.SENT]) == []
        assert store.list_jobs(conversation_id=404) == []
        assert store.list_jobs(states=[]) == []


class TestStoreContract(StoreContract):
    """The contract, once per backend of the `store` fixture."""


# -- SQLite only ----------------------------------------------------------------------------
class TestSqliteStoreTransactions:
    def test_failed_record_inbound_does_not_poison_the_dedupe(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import app.store.sqlite as sqlite_module

        store = SqliteStore(tmp_path / "store.db")
        store.init_schema()
        try:

            def broken_job_id() -> str:
                raise RuntimeError("boom")

            with monkeypatch.context() as patch:
                patch.setattr(sqlite_module, "_new_job_id", broken_job_id)
                with pytest.raises(RuntimeError):
                    store.record_inbound(make_message(11, 5), delivery_id="d-1", now=T0)
            assert store.job_state_counts() == {}
            # The delivery row was rolled back with the job: the retry is recorded.
            retried = store.record_inbound(make_message(11, 5), delivery_id="d-1", now=T0 + 1)
            assert retried.status is InboundStatus.RECORDED
            assert job_count(store) == 1
        finally:
            store.close()

    def test_two_stores_on_one_file_share_state(self, tmp_path: Path) -> None:
        first = SqliteStore(tmp_path / "store.db")
        first.init_schema()
        second = SqliteStore(tmp_path / "store.db")
        try:
            seed(first)
            assert [b.id for b in second.list_brokers()] == SLUGS
            recorded = new_job(first, 1, 1)
            dup = second.record_inbound(make_message(1, 1), delivery_id="other", now=T0)
            assert dup.status is InboundStatus.DUPLICATE
            assert second.get_job(recorded.id) == recorded
        finally:
            first.close()
            second.close()
