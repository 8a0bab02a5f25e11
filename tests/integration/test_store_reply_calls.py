"""The store contract of the four calls a reply makes (admit, claim, start_send, complete).

Each is one transaction composed of rules the contract suite checks one by one; these tests
check the composition: what each call does in one go, and that a refusal changes nothing. It
reuses the `store` fixture of test_store_contract.py: one run per backend.
"""

from __future__ import annotations

import pytest

from app.domain.jobs import JobState
from app.domain.reply_plan import ReplyPlan
from app.domain.rollout import RolloutState
from app.store.base import Store
from app.store.models import (
    PAUSED,
    ClaimStatus,
    ConversationStatus,
    InboundStatus,
    SendGate,
)
from tests.integration import test_store_contract as contract
from tests.integration.test_store_contract import (
    SLUGS,
    T0,
    job,
    make_message,
    new_job,
    running_job,
    seed,
    workload,
)

store = contract.store

# Each broker's delay differs, so the due time shows which broker the store picked.
PLAN = ReplyPlan({slug: 2.0 + index for index, slug in enumerate(SLUGS)})


def admit(store: Store, message_id: int, conversation_id: int, *, plan: ReplyPlan = PLAN):
    return store.admit_inbound(
        make_message(message_id, conversation_id),
        delivery_id=f"d-{message_id}",
        now=T0,
        plan=plan,
        payload=f'{{"id": {message_id}}}',
    )


class TestAdmit:
    def test_a_first_message_is_assigned_held_and_scheduled_at_once(self, store: Store) -> None:
        seed(store)
        outcome = admit(store, 1, 10, plan=ReplyPlan(PLAN.delay_s_by_broker, "human_requested"))
        assert outcome.status is InboundStatus.RECORDED
        assert outcome.job is not None
        scheduled = outcome.job
        conversation = store.get_conversation(10)
        assert conversation is not None and conversation.status is ConversationStatus.BOT
        broker = conversation.broker_id
        assert scheduled.state is JobState.WAITING
        assert (scheduled.broker_id, scheduled.capacity_held) == (broker, True)
        assert scheduled.delay_s == PLAN.delay_for(broker)
        assert scheduled.due_at == T0 + PLAN.delay_for(broker)
        assert scheduled.escalation_reason == "human_requested"
        assert scheduled.inbound_payload == '{"id": 1}'
        assert workload(store, broker) == 1
        assert job(store, scheduled.id) == scheduled

    def test_the_conversation_keeps_its_broker(self, store: Store) -> None:
        seed(store)
        store.assign_broker(10, "grace-lim", now=T0)
        first = admit(store, 1, 10).job
        second = admit(store, 2, 10).job
        assert first is not None and second is not None
        assert {first.broker_id, second.broker_id} == {"grace-lim"}
        assert second.due_at == T0 + PLAN.delay_for("grace-lim")

    def test_a_full_broker_leaves_the_job_queued_and_holds_nothing(self, store: Store) -> None:
        seed(store, capacity=1)
        store.assign_broker(10, "grace-lim", now=T0)
        store.assign_broker(11, "grace-lim", now=T0)
        assert admit(store, 1, 10).job is not None
        waiting = admit(store, 2, 11).job
        assert waiting is not None
        assert (waiting.state, waiting.capacity_held, waiting.due_at) == (
            JobState.QUEUED,
            False,
            None,
        )
        assert workload(store, "grace-lim") == 1

    def test_duplicates_and_human_conversations_are_refused_as_before(self, store: Store) -> None:
        seed(store)
        assert admit(store, 1, 10).status is InboundStatus.RECORDED
        again = admit(store, 1, 10)
        assert (again.status, again.reason) == (
            InboundStatus.DUPLICATE,
            "delivery_already_received",
        )
        store.set_conversation_status(11, ConversationStatus.HUMAN, "human_replied", now=T0)
        ignored = admit(store, 2, 11)
        assert (ignored.status, ignored.reason) == (InboundStatus.IGNORED, "conversation_human")
        assert contract.job_count(store) == 1

    def test_an_unnamed_broker_takes_the_longest_delay(self, store: Store) -> None:
        seed(store)
        store.assign_broker(10, "grace-lim", now=T0)
        scheduled = admit(store, 1, 10, plan=ReplyPlan({"sarah-wong": 1.0, "rachel-tan": 4.0}))
        assert scheduled.job is not None and scheduled.job.delay_s == 4.0


class TestSchedule:
    def test_schedule_job_is_admit_for_a_job_already_recorded(self, store: Store) -> None:
        seed(store)
        queued = new_job(store, 1, 10)
        scheduled = store.schedule_job(queued.id, plan=PLAN, now=T0 + 1)
        assert scheduled is not None and scheduled.state is JobState.WAITING
        assert scheduled.capacity_held
        assert store.schedule_job(queued.id, plan=PLAN, now=T0 + 2) is None  # not queued now
        assert workload(store, scheduled.broker_id or "") == 1

    def test_a_conversation_a_human_took_skips_the_job(self, store: Store) -> None:
        seed(store)
        queued = new_job(store, 1, 10)
        store.assign_broker(10, "grace-lim", now=T0)
        # A conversation that turned human after the job was recorded (set_conversation_status
        # would have skipped it; a stale row does not need to).
        store.set_conversation_status(10, ConversationStatus.HANDED_OFF, "x", now=T0)
        assert job(store, queued.id).state is JobState.SKIPPED
        fresh = new_job(store, 2, 12)
        store.assign_broker(12, "grace-lim", now=T0)
        store.set_conversation_status(12, ConversationStatus.HUMAN, "human_replied", now=T0 + 1)
        assert job(store, fresh.id).state is JobState.SKIPPED
        assert workload(store, "grace-lim") == 0


class TestClaim:
    def test_a_claim_carries_the_conversation(self, store: Store) -> None:
        seed(store)
        admitted = admit(store, 1, 10).job
        assert admitted is not None
        claim = store.claim_job(
            admitted.id, owner="w1", lease_s=30, coalesce_window_s=0, now=T0 + 10
        )
        assert claim.status is ClaimStatus.CLAIMED
        assert claim.conversation == store.get_conversation(10)

    def test_nothing_is_claimed_while_paused(self, store: Store) -> None:
        seed(store)
        admitted = admit(store, 1, 10).job
        assert admitted is not None
        initial = store.get_rollout(initial=RolloutState())
        paused = RolloutState(queue_paused=True, updated_at=T0, updated_by="ops")
        assert store.save_rollout(
            paused, expected=initial, action="pause", reason="x", automatic=False
        )
        claim = store.claim_job(
            admitted.id, owner="w1", lease_s=30, coalesce_window_s=0, now=T0 + 10
        )
        assert (claim.status, claim.reason) == (ClaimStatus.NOT_CLAIMABLE, PAUSED)
        assert job(store, admitted.id).state is JobState.WAITING


class TestStartSend:
    def test_go_stamps_the_send_and_returns_the_job_as_it_was(self, store: Store) -> None:
        seed(store)
        running = running_job(store, 1, 10)
        start = store.start_send(running.id, owner="w1", rate_per_s=10, now=T0 + 1)
        assert start.gate is SendGate.GO
        assert start.job is not None and start.job.send_started_at is None
        assert job(store, running.id).send_started_at == T0 + 1
        again = store.start_send(running.id, owner="w1", rate_per_s=10, now=T0 + 1.5)
        assert again.job is not None and again.job.send_started_at == T0 + 1

    def test_wait_when_the_send_rate_is_used_up_and_nothing_is_stamped(self, store: Store) -> None:
        seed(store)
        first, second = running_job(store, 1, 10), running_job(store, 2, 11)
        assert store.start_send(first.id, owner="w1", rate_per_s=1, now=T0 + 0.2).gate is (
            SendGate.GO
        )
        held = store.start_send(second.id, owner="w1", rate_per_s=1, now=T0 + 0.25)
        assert held.gate is SendGate.WAIT
        assert held.wait_s == pytest.approx(0.75)
        assert job(store, second.id).send_started_at is None
        later = store.start_send(second.id, owner="w1", rate_per_s=1, now=T0 + 1.0)
        assert later.gate is SendGate.GO

    def test_a_job_that_is_not_ours_is_lost(self, store: Store) -> None:
        seed(store)
        running = running_job(store, 1, 10)
        assert store.start_send(running.id, owner="w2", rate_per_s=10, now=T0).gate is (
            SendGate.LOST
        )
        assert job(store, running.id).send_started_at is None

    def test_a_human_takeover_skips_the_job_and_frees_its_broker(self, store: Store) -> None:
        seed(store)
        admitted = admit(store, 1, 10).job
        assert admitted is not None and admitted.broker_id is not None
        store.claim_job(admitted.id, owner="w1", lease_s=30, coalesce_window_s=0, now=T0 + 9)
        store.set_conversation_status(10, ConversationStatus.HUMAN, "human_replied", now=T0 + 9)
        start = store.start_send(admitted.id, owner="w1", rate_per_s=10, now=T0 + 10)
        assert (start.gate, start.reason) == (SendGate.NOT_BOT, "conversation human")
        skipped = job(store, admitted.id)
        assert (skipped.state, skipped.send_started_at) == (JobState.SKIPPED, None)
        assert workload(store, admitted.broker_id) == 0


class TestComplete:
    def test_a_reply_finishes_counts_and_frees_the_broker(self, store: Store) -> None:
        seed(store)
        admitted = admit(store, 1, 10).job
        assert admitted is not None and admitted.broker_id is not None
        broker = admitted.broker_id
        store.claim_job(admitted.id, owner="w1", lease_s=30, coalesce_window_s=0, now=T0 + 9)
        assert store.complete_job(
            admitted.id,
            owner="w1",
            state=JobState.SENT,
            now=T0 + 10,
            broker_id=broker,
            customer_messages=2,
            reply_text="Hello!",
            reply_message_id=77,
        )
        done = job(store, admitted.id)
        assert (done.state, done.reply_message_id, done.finished_at) == (
            JobState.SENT,
            77,
            T0 + 10,
        )
        conversation = store.get_conversation(10)
        assert conversation is not None
        assert (conversation.message_count, conversation.last_reply_at) == (2, T0 + 10)
        assert conversation.status is ConversationStatus.BOT
        brokers = {b.id: b for b in store.list_brokers()}
        assert (brokers[broker].messages_handled, brokers[broker].handoffs) == (2, 0)
        assert workload(store, broker) == 0

    def test_a_handoff_hands_the_conversation_over_and_skips_what_is_unsent(
        self, store: Store
    ) -> None:
        seed(store)
        first = admit(store, 1, 10).job
        assert first is not None and first.broker_id is not None
        store.claim_job(first.id, owner="w1", lease_s=30, coalesce_window_s=0, now=T0 + 9)
        later = admit(store, 2, 10).job  # arrived while the handoff was being written
        assert later is not None
        assert store.complete_job(
            first.id,
            owner="w1",
            state=JobState.HANDED_OFF,
            now=T0 + 10,
            broker_id=first.broker_id,
            customer_messages=1,
            handoff_reason="human_requested",
        )
        conversation = store.get_conversation(10)
        assert conversation is not None
        assert (conversation.status, conversation.handoff_reason) == (
            ConversationStatus.HANDED_OFF,
            "human_requested",
        )
        assert job(store, later.id).state is JobState.SKIPPED
        brokers = {b.id: b for b in store.list_brokers()}
        assert brokers[first.broker_id].handoffs == 1
        assert workload(store, first.broker_id) == 0

    def test_a_job_that_is_not_ours_changes_nothing(self, store: Store) -> None:
        seed(store)
        running = running_job(store, 1, 10)
        store.assign_broker(10, "sarah-wong", now=T0)
        assert not store.complete_job(
            running.id,
            owner="w2",
            state=JobState.HANDED_OFF,
            now=T0 + 10,
            broker_id="sarah-wong",
            customer_messages=1,
            handoff_reason="human_requested",
        )
        assert job(store, running.id).state is JobState.RUNNING
        conversation = store.get_conversation(10)
        assert conversation is not None
        assert (conversation.status, conversation.message_count) == (ConversationStatus.BOT, 0)
