"""The store contract for migration control: rollout state and audit, the n8n hand-over,
rollback cancellation, shadow comparisons, circuit breakers and the pipeline's health window.

It reuses the `store` fixture of test_store_contract.py, so it runs once per backend in that
module's BACKENDS (every store backend must pass it).
"""

from __future__ import annotations

import pytest

from app.domain.circuit import Circuit, CircuitPosition
from app.domain.jobs import JobKind, JobState, ReplyJob
from app.domain.reply_plan import ReplyPlan
from app.domain.rollout import GuardThresholds, RolloutState, Route
from app.store.base import Store
from app.store.models import InboundStatus, Verdict
from tests.integration import test_store_contract as contract
from tests.integration.test_store_contract import (
    T0,
    job,
    make_message,
    new_job,
    running_job,
    seed,
    waiting_job,
    workload,
)

# The contract module's parametrized fixture: one run per backend in contract.BACKENDS.
store = contract.store

INITIAL = RolloutState(percentage=10, shadow=True, updated_by="environment")


def forwarding_job(
    store: Store, message_id: int, conversation_id: int, *, now: float = T0
) -> ReplyJob:
    outcome = store.record_inbound(
        make_message(message_id, conversation_id),
        delivery_id=f"d-{message_id}",
        now=now,
        route=Route.N8N,
        payload=f'{{"id": {message_id}}}',
    )
    assert outcome.status is InboundStatus.RECORDED and outcome.job is not None
    return outcome.job


def finished(
    store: Store,
    message_id: int,
    conversation_id: int,
    state: JobState,
    *,
    received: float,
    done: float,
    fallback: bool = False,
) -> ReplyJob:
    running = running_job(store, message_id, conversation_id, now=received)
    assert store.finish_job(
        running.id,
        owner="w1",
        state=state,
        now=done,
        reply_message_id=message_id if state is not JobState.FAILED else None,
        used_fallback=fallback,
    )
    return job(store, running.id)


class TestMigrationStoreContract:
    # -- rollout state and audit -----------------------------------------------------------
    def test_initial_rollout_is_stored_on_first_read_only(self, store: Store) -> None:
        assert store.get_rollout(initial=INITIAL) == INITIAL
        assert store.get_rollout(initial=RolloutState(percentage=90)) == INITIAL
        assert store.audit_log() == []

    def test_save_rollout_is_compare_and_set(self, store: Store) -> None:
        before = store.get_rollout(initial=INITIAL)
        guard = GuardThresholds(max_failure_rate=0.2, window_s=120.0, min_sample=5)
        after = RolloutState(
            percentage=30, shadow=False, guard=guard, updated_at=T0, updated_by="ops:alice"
        )
        assert store.save_rollout(
            after, expected=before, action="set_rollout", reason="step up", automatic=False
        )
        assert store.get_rollout(initial=INITIAL) == after
        # A writer that read the old state loses, and leaves no trace.
        racer = RolloutState(percentage=90, updated_at=T0 + 1, updated_by="ops:bob")
        assert not store.save_rollout(
            racer, expected=before, action="set_rollout", reason="too late", automatic=False
        )
        assert store.get_rollout(initial=INITIAL) == after
        assert [entry.reason for entry in store.audit_log()] == ["step up"]

    def test_audit_rows_keep_who_when_from_to_why(self, store: Store) -> None:
        s0 = store.get_rollout(initial=INITIAL)
        s1 = RolloutState(percentage=50, updated_at=T0, updated_by="admin-api")
        s2 = RolloutState(percentage=0, updated_at=T0 + 5, updated_by="rollback-guard")
        assert store.save_rollout(
            s1, expected=s0, action="set_rollout", reason="half", automatic=False
        )
        assert store.save_rollout(
            s2,
            expected=s1,
            action="auto_rollback",
            reason="failure rate 9%",
            automatic=True,
            detail={"cancelled": 3},
        )
        latest, first = store.audit_log()
        assert (first.at, first.actor, first.action) == (T0, "admin-api", "set_rollout")
        assert (first.reason, first.automatic, first.detail) == ("half", False, None)
        assert first.before["percentage"] == 10 and first.before["shadow"] is True
        assert first.after["percentage"] == 50 and first.after["updated_by"] == "admin-api"
        assert first.after["guard"] == {
            "enabled": True,
            "max_failure_rate": 0.05,
            "max_fallback_rate": 0.25,
            "max_p95_latency_s": 20.0,
            "window_s": 600.0,
            "min_sample": 20,
        }
        assert (latest.at, latest.actor, latest.action) == (
            T0 + 5,
            "rollback-guard",
            "auto_rollback",
        )
        assert latest.automatic is True and latest.detail == {"cancelled": 3}
        assert latest.before["percentage"] == 50 and latest.after["percentage"] == 0
        assert latest.id > first.id
        assert [e.id for e in store.audit_log(limit=1)] == [latest.id]

    # -- routing into the ledger -----------------------------------------------------------
    def test_record_inbound_for_n8n_creates_a_forwarding_job(self, store: Store) -> None:
        forwarding = forwarding_job(store, 1, 7)
        assert forwarding.kind is JobKind.REPLY
        assert forwarding.state is JobState.FORWARDING
        assert forwarding.route == "n8n" and forwarding.inbound_payload == '{"id": 1}'
        again = store.record_inbound(
            make_message(1, 7), delivery_id="other", now=T0 + 1, route=Route.N8N
        )
        assert again.status is InboundStatus.DUPLICATE
        bypass = store.record_inbound(
            make_message(2, 7),
            delivery_id=None,
            now=T0,
            route=Route.NEW,
            route_reason="n8n_circuit_open",
            payload="{}",
        )
        assert bypass.job is not None
        assert (bypass.job.state, bypass.job.route) == (JobState.QUEUED, "new")
        assert bypass.job.route_reason == "n8n_circuit_open"
        plain = new_job(store, 3, 8)
        assert (plain.route, plain.route_reason, plain.inbound_payload) == ("new", None, None)

    def test_chatwoot_headers_are_kept_with_the_message_for_a_later_forward(
        self, store: Store
    ) -> None:
        headers = {
            "X-Chatwoot-Signature": "sha256=ab12",
            "X-Chatwoot-Timestamp": "1700000000",
            "X-Chatwoot-Delivery": "d-1",
            "Content-Type": "application/json",
        }
        seed(store)
        forwarding = store.record_inbound(
            make_message(1, 7), delivery_id="d-1", now=T0, route=Route.N8N, headers=headers
        ).job
        assert forwarding is not None and forwarding.inbound_headers == headers
        admitted = store.admit_inbound(
            make_message(2, 8),
            delivery_id="d-2",
            now=T0,
            plan=ReplyPlan({"sarah-wong": 1.0}),
            payload='{"id": 2}',
            headers={"X-Chatwoot-Delivery": "d-2"},
        ).job
        assert admitted is not None and admitted.state is JobState.WAITING
        assert admitted.inbound_headers == {"X-Chatwoot-Delivery": "d-2"}
        # Cancelled by a rollback, the job still has them for the re-forward.
        (cancelled,) = store.cancel_unsent_replies(reason="rollback", now=T0 + 1)
        assert cancelled.id == admitted.id
        assert cancelled.inbound_headers == {"X-Chatwoot-Delivery": "d-2"}
        assert job(store, forwarding.id).inbound_headers == headers
        assert new_job(store, 3, 9).inbound_headers is None

    def test_forwards_n8n_never_answered_go_to_the_new_pipeline_once(self, store: Store) -> None:
        seed(store)
        answered, silent, recent, old = (forwarding_job(store, n, 10 + n) for n in (1, 2, 3, 4))
        for forwarding, at in ((answered, T0), (silent, T0), (recent, T0 + 50), (old, T0 - 2000)):
            assert store.forward_outcome(forwarding.id, accepted=True, reason="bucket", now=at)
        # n8n's reply in conversation 11 answers message 1, and nothing in other conversations.
        assert store.mark_n8n_answered(11, at=T0 + 2) == 1
        assert store.mark_n8n_answered(11, at=T0 + 3) == 0
        comparison = store.create_shadow(make_message(2, 12), now=T0)
        assert comparison is not None

        requeued = store.requeue_silent_forwards(now=T0 + 61, silent_after_s=60, horizon_s=900)
        assert [j.id for j in requeued] == [silent.id]  # recent: not yet; old: past the horizon
        (moved,) = requeued
        assert (moved.state, moved.route, moved.route_reason) == (
            JobState.QUEUED,
            "new",
            "n8n_silent",
        )
        assert moved.finished_at is None
        (row,) = store.list_comparisons(conversation_id=12)
        assert row.n8n_source == "silent" and row.n8n_reply is None
        again = store.requeue_silent_forwards(now=T0 + 62, silent_after_s=60, horizon_s=900)
        assert again == []
        later = store.requeue_silent_forwards(now=T0 + 111, silent_after_s=60, horizon_s=900)
        assert [j.id for j in later] == [recent.id]
        assert job(store, answered.id).state is JobState.FORWARDED

    def test_forward_outcome_accepted_marks_the_job_forwarded(self, store: Store) -> None:
        forwarding = forwarding_job(store, 1, 7)
        done = store.forward_outcome(forwarding.id, accepted=True, reason="bucket", now=T0 + 1)
        assert done is not None
        assert (done.state, done.route, done.route_reason) == (JobState.FORWARDED, "n8n", "bucket")
        assert done.finished_at == T0 + 1
        # Only once: a forwarded job is finished.
        assert store.forward_outcome(forwarding.id, accepted=False, reason="x", now=T0 + 2) is None
        assert job(store, forwarding.id).state is JobState.FORWARDED

    def test_forward_outcome_refused_hands_the_job_to_the_new_pipeline(self, store: Store) -> None:
        forwarding = forwarding_job(store, 1, 7)
        requeued = store.forward_outcome(
            forwarding.id, accepted=False, reason="n8n_failed", now=T0 + 1
        )
        assert requeued is not None
        assert (requeued.state, requeued.route) == (JobState.QUEUED, "new")
        assert requeued.route_reason == "n8n_failed"
        assert requeued.finished_at is None and requeued.error is None
        # A queued job is not the hand-over's to change any more.
        assert store.forward_outcome(forwarding.id, accepted=True, reason="x", now=T0 + 2) is None
        assert job(store, forwarding.id).state is JobState.QUEUED

    def test_forward_outcome_ignores_jobs_of_the_new_pipeline(self, store: Store) -> None:
        queued = new_job(store, 1, 7)
        assert store.forward_outcome(queued.id, accepted=True, reason="x", now=T0) is None
        assert store.forward_outcome(queued.id, accepted=False, reason="x", now=T0) is None
        assert job(store, queued.id) == queued

    # -- rollback --------------------------------------------------------------------------
    def test_cancel_unsent_replies_cancels_only_what_cannot_have_sent(self, store: Store) -> None:
        seed(store)
        queued = new_job(store, 1, 1)
        waiting = waiting_job(store, 2, 2)
        unsent_running = running_job(store, 3, 3, owner="w1")
        sending = running_job(store, 4, 4, owner="w2")
        for held in (queued, waiting, unsent_running, sending):
            assert store.hold_capacity(held.id, "sarah-wong", now=T0)
        assert store.begin_send(sending.id, owner="w2", now=T0 + 1) is not None
        sent = finished(store, 5, 5, JobState.SENT, received=T0, done=T0 + 1)
        forwarding = forwarding_job(store, 6, 6)
        greeting = store.create_greeting_job(9, "sarah-wong", now=T0)
        shadow = store.create_shadow(make_message(7, 6), now=T0)
        assert shadow is not None
        assert workload(store, "sarah-wong") == 4

        cancelled = store.cancel_unsent_replies(reason="rollback: test", now=T0 + 2)

        assert [c.id for c in cancelled] == [queued.id, waiting.id, unsent_running.id]
        for c in cancelled:
            assert c.state is JobState.CANCELLED
            assert c.error == "rollback: test"
            assert c.capacity_held is False
            assert c.lease_owner is None and c.lease_expires_at is None
            assert c.finished_at == T0 + 2
        assert workload(store, "sarah-wong") == 1  # only the job that is sending keeps its slot
        assert job(store, sending.id).state is JobState.RUNNING
        assert job(store, sent.id).state is JobState.SENT
        assert job(store, forwarding.id).state is JobState.FORWARDING
        assert job(store, greeting.id).state is JobState.QUEUED
        assert job(store, shadow.id).state is JobState.QUEUED
        # The worker that held the cancelled job can no longer send it.
        assert store.begin_send(unsent_running.id, owner="w1", now=T0 + 3) is None
        # Pressing twice cancels nothing more.
        assert store.cancel_unsent_replies(reason="again", now=T0 + 4) == []

    def test_cancelled_jobs_go_to_n8n_or_back_to_the_new_pipeline(self, store: Store) -> None:
        first, second = new_job(store, 1, 1), new_job(store, 2, 2)
        store.cancel_unsent_replies(reason="rollback", now=T0 + 1)
        taken = store.forward_outcome(first.id, accepted=True, reason="rollback", now=T0 + 2)
        assert taken is not None
        assert (taken.state, taken.route, taken.route_reason) == (
            JobState.FORWARDED,
            "n8n",
            "rollback",
        )
        kept = store.forward_outcome(
            second.id, accepted=False, reason="rollback_n8n_unavailable", now=T0 + 2
        )
        assert kept is not None
        assert (kept.state, kept.route) == (JobState.QUEUED, "new")
        assert kept.route_reason == "rollback_n8n_unavailable"
        assert kept.error is None and kept.finished_at is None

    def test_cancel_job(self, store: Store) -> None:
        seed(store)
        queued = new_job(store, 1, 1)
        unsent_running = running_job(store, 2, 2)
        sending = running_job(store, 3, 3, owner="w2")
        store.hold_capacity(queued.id, "sarah-wong", now=T0)
        store.begin_send(sending.id, owner="w2", now=T0)
        sent = finished(store, 4, 4, JobState.SENT, received=T0, done=T0 + 1)
        assert store.cancel_job(queued.id, reason="operator", now=T0 + 1)
        assert store.cancel_job(unsent_running.id, reason="operator", now=T0 + 1)
        assert not store.cancel_job(sending.id, reason="operator", now=T0 + 1)
        assert not store.cancel_job(sent.id, reason="operator", now=T0 + 1)
        assert not store.cancel_job("no-such-job", reason="operator", now=T0 + 1)
        assert not store.cancel_job(queued.id, reason="twice", now=T0 + 2)
        assert job(store, queued.id).state is JobState.CANCELLED
        assert job(store, queued.id).error == "operator"
        assert workload(store, "sarah-wong") == 0

    def test_requeue_job_retries_failed_and_cancelled_jobs(self, store: Store) -> None:
        failed = finished(store, 1, 1, JobState.FAILED, received=T0, done=T0 + 1)
        cancelled = new_job(store, 2, 2)
        store.cancel_job(cancelled.id, reason="operator", now=T0)
        sent = finished(store, 3, 3, JobState.SENT, received=T0, done=T0 + 1)
        queued = new_job(store, 4, 4)
        again = store.requeue_job(failed.id, now=T0 + 5)
        assert again is not None
        assert again.state is JobState.QUEUED and again.attempts == 0
        assert again.error is None and again.finished_at is None and again.send_started_at is None
        assert again.updated_at == T0 + 5
        requeued = store.requeue_job(cancelled.id, now=T0 + 5)
        assert requeued is not None and requeued.state is JobState.QUEUED
        assert store.requeue_job(sent.id, now=T0 + 5) is None
        assert store.requeue_job(queued.id, now=T0 + 5) is None
        assert store.requeue_job("no-such-job", now=T0 + 5) is None

    # -- shadow comparisons ----------------------------------------------------------------
    def test_create_shadow_once_per_message(self, store: Store) -> None:
        shadow = store.create_shadow(make_message(11, 5, "Can I refinance?"), now=T0)
        assert shadow is not None
        assert (shadow.kind, shadow.state, shadow.route) == (JobKind.SHADOW, JobState.QUEUED, "n8n")
        assert shadow.conversation_id == 5 and shadow.inbound_content == "Can I refinance?"
        assert shadow.comparison_id is not None
        assert store.create_shadow(make_message(11, 5, "Can I refinance?"), now=T0 + 1) is None
        assert store.job_state_counts() == {"queued": 1}
        comparison = store.get_comparison(shadow.comparison_id)
        assert comparison is not None
        assert (comparison.conversation_id, comparison.inbound_message_id) == (5, 11)
        assert comparison.customer_message == "Can I refinance?"
        assert comparison.received_at == T0
        assert comparison.shadow_reply is None and comparison.n8n_reply is None
        assert comparison.similarity is None and comparison.verdict is None
        # The shadow does not make the real message a duplicate.
        real = store.record_inbound(
            make_message(11, 5), delivery_id="d-11", now=T0, route=Route.N8N
        )
        assert real.status is InboundStatus.RECORDED

    def test_n8n_reply_pairs_by_message_id(self, store: Store) -> None:
        first = store.create_shadow(make_message(1, 7), now=T0)
        second = store.create_shadow(make_message(2, 7), now=T0 + 1)
        assert first is not None and second is not None
        paired = store.record_n8n_reply(
            7, reply="n8n says hi", at=T0 + 2.5, source="webhook_response", inbound_message_id=1
        )
        assert paired is not None and paired.id == first.comparison_id
        assert paired.n8n_reply == "n8n says hi" and paired.n8n_source == "webhook_response"
        assert paired.n8n_latency_ms == pytest.approx(2500.0)
        # Already paired: a second reply for the same message pairs with nothing.
        assert (
            store.record_n8n_reply(7, reply="again", at=T0 + 3, source="x", inbound_message_id=1)
            is None
        )
        assert (
            store.record_n8n_reply(7, reply="?", at=T0, source="x", inbound_message_id=99) is None
        )
        other = store.get_comparison(second.comparison_id)  # type: ignore[arg-type]
        assert other is not None and other.n8n_reply is None

    def test_n8n_reply_without_message_id_pairs_the_latest_unpaired(self, store: Store) -> None:
        older = store.create_shadow(make_message(1, 7), now=T0)
        newer = store.create_shadow(make_message(2, 7), now=T0 + 5)
        elsewhere = store.create_shadow(make_message(3, 8), now=T0 + 6)
        assert older is not None and newer is not None and elsewhere is not None
        # A reply older than every comparison answers none of them.
        assert store.record_n8n_reply(7, reply="early", at=T0 - 1, source="message_event") is None
        # Between the two: only the older one had arrived.
        between = store.record_n8n_reply(7, reply="one", at=T0 + 1, source="message_event")
        assert between is not None and between.id == older.comparison_id
        latest = store.record_n8n_reply(7, reply="two", at=T0 + 7, source="message_event")
        assert latest is not None and latest.id == newer.comparison_id
        assert latest.n8n_latency_ms == pytest.approx(2000.0)
        assert store.record_n8n_reply(7, reply="three", at=T0 + 8, source="message_event") is None
        assert store.record_n8n_reply(404, reply="x", at=T0 + 8, source="message_event") is None
        untouched = store.get_comparison(elsewhere.comparison_id)  # type: ignore[arg-type]
        assert untouched is not None and untouched.n8n_reply is None

    @pytest.mark.parametrize("shadow_first", [True, False])
    def test_similarity_is_scored_once_both_replies_are_in(
        self, store: Store, shadow_first: bool
    ) -> None:
        shadow = store.create_shadow(make_message(1, 7), now=T0)
        assert shadow is not None and shadow.comparison_id is not None
        cid = shadow.comparison_id

        def shadow_reply() -> None:
            store.record_shadow_reply(
                cid,
                reply="Hello Tan, rates start at 2.6%.",
                latency_ms=1234.0,
                used_fallback=False,
                broker_id="sarah-wong",
            )

        def n8n_reply() -> None:
            store.record_n8n_reply(
                7, reply="hello tan rates start at 2.6%", at=T0 + 1, source="webhook_response"
            )

        first, second = (shadow_reply, n8n_reply) if shadow_first else (n8n_reply, shadow_reply)
        first()
        half = store.get_comparison(cid)
        assert half is not None and half.similarity is None
        second()
        both = store.get_comparison(cid)
        assert both is not None
        assert both.similarity == 1.0
        assert (both.broker_id, both.shadow_latency_ms, both.shadow_used_fallback) == (
            "sarah-wong",
            1234.0,
            False,
        )

    def test_similarity_of_different_replies_is_below_one(self, store: Store) -> None:
        shadow = store.create_shadow(make_message(1, 7), now=T0)
        assert shadow is not None and shadow.comparison_id is not None
        store.record_shadow_reply(
            shadow.comparison_id,
            reply="We can help you refinance today.",
            latency_ms=1.0,
            used_fallback=True,
            broker_id="grace-lim",
        )
        scored = store.record_n8n_reply(7, reply="Please call us.", at=T0 + 1, source="x")
        assert scored is not None and scored.similarity is not None
        assert 0.0 <= scored.similarity < 0.5
        assert scored.shadow_used_fallback is True

    def test_set_verdict(self, store: Store) -> None:
        shadow = store.create_shadow(make_message(1, 7), now=T0)
        assert shadow is not None and shadow.comparison_id is not None
        assert store.set_verdict(
            shadow.comparison_id, Verdict.BETTER, note="warmer", actor="ops:alice", now=T0 + 9
        )
        rated = store.get_comparison(shadow.comparison_id)
        assert rated is not None
        assert (rated.verdict, rated.verdict_note, rated.verdict_by, rated.verdict_at) == (
            Verdict.BETTER,
            "warmer",
            "ops:alice",
            T0 + 9,
        )
        assert store.set_verdict(shadow.comparison_id, Verdict.WORSE, note="", actor="b", now=T0)
        assert store.get_comparison(shadow.comparison_id).verdict is Verdict.WORSE  # type: ignore[union-attr]
        assert not store.set_verdict(999_999, Verdict.SAME, note="", actor="b", now=T0)

    def test_list_comparisons_filters_newest_first(self, store: Store) -> None:
        ids = []
        for n, (conversation, broker, reply) in enumerate(
            [
                (1, "sarah-wong", "alpha beta gamma"),  # identical to n8n: similarity 1
                (1, "grace-lim", "totally different words"),  # similarity 0
                (2, "sarah-wong", None),  # not scored
            ]
        ):
            shadow = store.create_shadow(make_message(10 + n, conversation), now=T0 + 10 * n)
            assert shadow is not None and shadow.comparison_id is not None
            ids.append(shadow.comparison_id)
            if reply is not None:
                store.record_shadow_reply(
                    shadow.comparison_id,
                    reply=reply,
                    latency_ms=1.0,
                    used_fallback=False,
                    broker_id=broker,
                )
                store.record_n8n_reply(
                    conversation,
                    reply="alpha beta gamma",
                    at=T0 + 10 * n + 1,
                    source="x",
                    inbound_message_id=10 + n,
                )
        first, second, third = ids
        store.set_verdict(first, Verdict.SAME, note="", actor="a", now=T0)

        def listed(**filters: object) -> list[int]:
            return [c.id for c in store.list_comparisons(**filters)]  # type: ignore[arg-type]

        assert listed() == [third, second, first]
        assert listed(since=T0 + 10) == [third, second]
        assert listed(until=T0 + 10) == [first]
        assert listed(since=T0 + 5, until=T0 + 15) == [second]
        assert listed(broker_id="sarah-wong") == [first]
        assert listed(max_similarity=0.5) == [second]
        assert listed(max_similarity=1.0) == [second, first]
        assert listed(unrated=True) == [third, second]
        assert listed(conversation_id=1) == [second, first]
        assert listed(conversation_id=1, unrated=True) == [second]
        assert listed(limit=1) == [third]
        assert listed(conversation_id=404) == []

    # -- circuit breakers ------------------------------------------------------------------
    def test_unknown_circuit_is_closed_at_version_zero(self, store: Store) -> None:
        assert store.get_circuit("n8n") == Circuit()

    def test_swap_circuit_is_compare_and_set_from_the_first_insert(self, store: Store) -> None:
        opened = Circuit(CircuitPosition.OPEN, consecutive_failures=5, opened_at=T0)
        assert store.swap_circuit("n8n", expected_version=0, circuit=opened)
        stored = store.get_circuit("n8n")
        assert stored == Circuit(CircuitPosition.OPEN, 5, T0, None, version=1)
        # A second "first insert" lost the race.
        assert not store.swap_circuit("n8n", expected_version=0, circuit=Circuit())
        probing = Circuit(CircuitPosition.HALF_OPEN, 5, T0, T0 + 30, version=1)
        assert store.swap_circuit("n8n", expected_version=1, circuit=probing)
        assert store.get_circuit("n8n") == Circuit(CircuitPosition.HALF_OPEN, 5, T0, T0 + 30, 2)
        # Stale versions lose.
        assert not store.swap_circuit("n8n", expected_version=1, circuit=Circuit())
        assert not store.swap_circuit("n8n", expected_version=7, circuit=Circuit())
        assert store.get_circuit("n8n").version == 2
        # Circuits are independent by name.
        assert store.get_circuit("other") == Circuit()
        assert store.swap_circuit("other", expected_version=0, circuit=Circuit())
        assert store.get_circuit("other").version == 1

    # -- the new pipeline's health ---------------------------------------------------------
    def test_reply_window_stats_counts_new_pipeline_replies_in_the_window(
        self, store: Store
    ) -> None:
        seed(store)
        finished(store, 1, 1, JobState.SENT, received=T0, done=T0 + 4)
        finished(store, 2, 2, JobState.SENT, received=T0, done=T0 + 2, fallback=True)
        finished(store, 3, 3, JobState.HANDED_OFF, received=T0, done=T0 + 8)
        finished(store, 4, 4, JobState.FAILED, received=T0, done=T0 + 9)
        # Outside the window.
        finished(store, 5, 5, JobState.FAILED, received=T0 - 100, done=T0 - 50)
        # Not the new pipeline's replies: a greeting, n8n's messages, a cancelled job.
        greeting = store.create_greeting_job(6, "sarah-wong", now=T0)
        store.prepare_job(
            greeting.id, broker_id="sarah-wong", delay_s=0, escalation_reason=None, now=T0
        )
        store.claim_job(greeting.id, owner="w1", lease_s=30, coalesce_window_s=0, now=T0)
        assert store.finish_job(greeting.id, owner="w1", state=JobState.SENT, now=T0 + 1)
        forwarded = forwarding_job(store, 7, 7)
        store.forward_outcome(forwarded.id, accepted=True, reason="bucket", now=T0 + 1)
        cancelled = new_job(store, 8, 8, now=T0 + 100)
        store.cancel_job(cancelled.id, reason="x", now=T0 + 101)

        stats = store.reply_window_stats(since=T0, now=T0 + 10)

        assert (stats.finished, stats.failed, stats.sent, stats.fallbacks) == (4, 1, 2, 1)
        # Nearest rank over the answered replies (2, 4, 8 s): p50 rank 2, p95 rank 3.
        assert (stats.p50_s, stats.p95_s) == (4.0, 8.0)
        assert stats.backlog == 0

    def test_reply_window_stats_backlog_is_overdue_queued_and_waiting_jobs(
        self, store: Store
    ) -> None:
        # Overdue: queued, or waiting past its due time, for longer than overdue_s (30 s).
        new_job(store, 1, 1, now=T0)  # queued since T0: overdue
        new_job(store, 2, 2, now=T0 + 20)  # queued since T0 + 20: not overdue yet
        waiting_job(store, 3, 3, now=T0, delay_s=5)  # due at T0 + 5: overdue
        waiting_job(store, 4, 4, now=T0, delay_s=25)  # due at T0 + 25: not overdue yet
        running_job(store, 5, 5, now=T0)  # running is not backlog
        forwarding_job(store, 6, 6, now=T0)  # n8n's, not backlog
        stats = store.reply_window_stats(since=T0, now=T0 + 40)
        assert stats.backlog == 2
        assert (stats.finished, stats.p50_s, stats.p95_s) == (0, None, None)
        assert store.reply_window_stats(since=T0, now=T0 + 40, overdue_s=0).backlog == 4
        assert store.reply_window_stats(since=T0, now=T0 + 30).backlog == 0
