"""A realistic day of ai-broker in a store: for the console's browser test, its benchmark and demo.

One call writes, straight into the SQLite store, what a busy day of the migration leaves behind:
the five brokers, their conversations, a reply-job ledger over the last `hours` with a Singapore
business-hours rhythm, the rollout's history (shadow on, 10 → 25 → 50 %, an automatic rollback
after a failure spike, a pause, back to 50 %), shadow comparisons pairing n8n's reply with the new
pipeline's for the same customer message, broker workload samples and worker heartbeats.

Customer messages come from the sandbox's scripted conversations (app/sandbox/scripts.py);
replies are written in each persona's voice, with the handoff and fallback texts the pipeline
really sends. Rows are inserted in bulk (one transaction), so 100,000 jobs take seconds.
"""

from __future__ import annotations

import json
import math
import random
import sqlite3
import time
import traceback
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from app.domain.personas import (
    PERSONAS,
    BrokerPersona,
    PersonaType,
    failure_apology,
    fallback_reply,
    handoff_message,
    persona_by_slug,
)
from app.domain.rollout import GuardThresholds, RolloutState, bucket
from app.domain.similarity import similarity
from app.domain.urgency import escalation_reason
from app.sandbox.scripts import SCRIPTS, ConversationScript
from app.store.analytics import SqliteAnalytics
from app.store.codec import guard_to_json
from app.store.sqlite import SqliteStore

SGT_OFFSET_S = 8 * 3600
FIRST_CONVERSATION_ID = 41_000
FIRST_MESSAGE_ID = 2_300_000
SAMPLE_EVERY_S = 60
PAYLOAD_RECENT_S = 6 * 3600  # jobs younger than this keep their webhook body (as in production)

# The brokers' capacity in this seeded day, and how busy each is right now (Michelle is full).
CAPACITY = {
    "michelle-chen": 12,
    "jasmine-lee": 10,
    "rachel-tan": 10,
    "sarah-wong": 10,
    "grace-lim": 8,
}
WORKLOAD_NOW = {
    "michelle-chen": 12,
    "jasmine-lee": 5,
    "rachel-tan": 3,
    "sarah-wong": 8,
    "grace-lim": 1,
}
BROKER_WEIGHTS = {
    "michelle-chen": 0.30,
    "jasmine-lee": 0.14,
    "rachel-tan": 0.18,
    "sarah-wong": 0.24,
    "grace-lim": 0.14,
}
OPERATORS = ("wei.ling@nextnest.sg", "daniel.ho@nextnest.sg", "priya.nair@nextnest.sg")
SHADOW_ON_ACTOR = OPERATORS[0]


@dataclass(frozen=True)
class SeedPlan:
    jobs: int = 100_000  # ledger rows in total, shadow jobs included (within a few %)
    comparisons: int = 10_000
    hours: float = 24.0
    # A store that no real worker uses (browser test, benchmark): also set the live rollout,
    # the brokers' current workload, worker heartbeats and unsent jobs. Off for a store a real
    # worker will run on, whose reaper would pick seeded unsent jobs up.
    live: bool = True
    random_seed: int = 7


@dataclass(frozen=True)
class SeedSummary:
    jobs: int
    comparisons: int
    conversations: int
    audit_entries: int
    workload_samples: int
    seconds: float


@dataclass(frozen=True)
class _Change:
    """One rollout change of the seeded day, at a fraction of the span."""

    at_fraction: float
    actor: str
    action: str
    reason: str
    percentage: int | None = None
    paused: bool | None = None
    automatic: bool = False
    detail: dict[str, object] | None = None


HISTORY: tuple[_Change, ...] = (
    _Change(
        0.0,
        SHADOW_ON_ACTOR,
        "set_rollout",
        "Start shadow comparison before moving any traffic",
        percentage=0,
    ),
    _Change(
        0.17, OPERATORS[0], "set_rollout", "Shadow replies rated same or better", percentage=10
    ),
    _Change(0.40, OPERATORS[1], "set_rollout", "10 % stable for 5 h, no failures", percentage=25),
    _Change(0.56, OPERATORS[1], "set_rollout", "25 % stable; p95 well under guard", percentage=50),
    _Change(
        0.655,
        "rollback-guard",
        "auto_rollback",
        "failure rate 11% over 212 replies exceeds 5%",
        percentage=0,
        automatic=True,
        detail={"cancelled": 14, "forwarded_to_n8n": 13, "answered_by_new_pipeline": 1},
    ),
    _Change(0.67, OPERATORS[2], "pause", "Investigating OpenAI timeouts", paused=True),
    _Change(0.69, OPERATORS[2], "resume", "OpenAI status page: resolved", paused=False),
    _Change(
        0.71, OPERATORS[2], "set_rollout", "Timeouts resolved; resume carefully", percentage=25
    ),
    _Change(
        0.84, OPERATORS[0], "set_rollout", "3 h stable at 25 % after the incident", percentage=50
    ),
)
FAILURE_SPIKE = (0.61, 0.655)  # fraction of the span when OpenAI timed out


def seed_store(
    store_path: Path, plan: SeedPlan | None = None, *, now: float | None = None
) -> SeedSummary:
    """Write a seeded day into the store at `store_path` (created if absent)."""
    plan = plan or SeedPlan()
    started = time.perf_counter()
    now = time.time() if now is None else now
    store = SqliteStore(store_path)
    store.init_schema()
    store.seed_brokers(PERSONAS, max_concurrent_chats=100)
    store.close()
    analytics = SqliteAnalytics(store_path)
    analytics.state_counts()  # creates the console's own tables
    analytics.close()
    day = _Day(plan, now)
    connection = sqlite3.connect(store_path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("BEGIN IMMEDIATE")
        summary = day.write(connection)
        connection.execute("COMMIT")
    finally:
        connection.close()
    return replace(summary, seconds=time.perf_counter() - started)


# -- the day -----------------------------------------------------------------------------------
@dataclass
class _Conversation:
    id: int
    script: ConversationScript
    broker: BrokerPersona
    started_at: float
    status: str = "bot"
    message_count: int = 0
    handoff_reason: str | None = None
    handoff_at: float | None = None
    last_customer_message_at: float | None = None
    last_reply_at: float | None = None


@dataclass
class _Counters:
    messages: dict[str, int] = field(default_factory=dict)
    handoffs: dict[str, int] = field(default_factory=dict)
    conversations: dict[str, int] = field(default_factory=dict)


class _Day:
    def __init__(self, plan: SeedPlan, now: float) -> None:
        self.plan = plan
        self.now = now
        self.span = plan.hours * 3600
        self.start = now - self.span
        self.rng = random.Random(plan.random_seed)
        self.message_ids = iter(range(FIRST_MESSAGE_ID, FIRST_MESSAGE_ID + 10 * plan.jobs + 10))
        self.counters = _Counters()
        self.jobs: list[tuple[Any, ...]] = []
        self.comparisons: list[tuple[Any, ...]] = []
        self.n8n_candidates: list[int] = []  # indexes into self.jobs of n8n-answered messages
        self.changes = [(self.start + c.at_fraction * self.span, c) for c in HISTORY]
        self.by_id: dict[int, _Conversation] = {}

    # -- rollout over the day ----------------------------------------------------------------
    def percentage_at(self, at: float) -> int:
        percentage = 0
        for when, change in self.changes:
            if when > at:
                break
            if change.percentage is not None:
                percentage = change.percentage
        return percentage

    def in_spike(self, at: float) -> bool:
        low, high = FAILURE_SPIKE
        return self.start + low * self.span <= at < self.start + high * self.span

    # -- writing -----------------------------------------------------------------------------
    def write(self, db: sqlite3.Connection) -> SeedSummary:
        conversations = self._conversations()
        self.by_id = {c.id: c for c in conversations}
        for conversation in conversations:
            self._play(conversation)
        self._shadow_comparisons()
        if self.plan.live:
            self._unsent(conversations)
        db.executemany(_JOB_INSERT, self.jobs)
        db.executemany(_COMPARISON_INSERT, self.comparisons)
        db.executemany(_CONVERSATION_INSERT, [_conversation_row(c) for c in conversations])
        self._brokers(db)
        audit = self._audit(db)
        samples = self._samples(db)
        if self.plan.live:
            self._heartbeats(db)
        return SeedSummary(
            jobs=len(self.jobs),
            comparisons=len(self.comparisons),
            conversations=len(conversations),
            audit_entries=audit,
            workload_samples=samples,
            seconds=0.0,
        )

    def _conversations(self) -> list[_Conversation]:
        # A conversation leaves about 5 ledger rows (greeting, replies), shadows aside.
        count = max(1, round((self.plan.jobs - self.plan.comparisons) / 5.0))
        minutes = int(self.span // 60)
        weights = [_busyness(self.start + m * 60) for m in range(minutes)]
        starts = sorted(
            self.start + m * 60 + self.rng.random() * 60
            for m in self.rng.choices(range(minutes), weights=weights, k=count)
        )
        brokers = [persona_by_slug(slug) for slug in BROKER_WEIGHTS]
        return [
            _Conversation(
                id=FIRST_CONVERSATION_ID + index,
                script=self.rng.choice(SCRIPTS),
                broker=self.rng.choices(brokers, weights=list(BROKER_WEIGHTS.values()))[0],
                started_at=at,
            )
            for index, at in enumerate(starts)
        ]

    def _play(self, conversation: _Conversation) -> None:
        slug = conversation.broker.slug
        self.counters.conversations[slug] = self.counters.conversations.get(slug, 0) + 1
        at = conversation.started_at
        if self.rng.random() < 0.7:  # came through the lead form: a greeting first
            self._finished_job(conversation, "greeting", at, None, route="new")
            at += self.rng.uniform(20, 240)
        turns = list(conversation.script.turns)
        extra = self.rng.randint(0, 4)
        turns += [self.rng.choice(FOLLOW_UPS) for _ in range(extra)]
        previous_new_job: int | None = None
        for turn in turns:
            if at >= self.now - 120:
                break
            if conversation.status != "bot":
                break
            route = "new" if bucket(conversation.id) <= self.percentage_at(at) else "n8n"
            index = self._finished_job(conversation, "reply", at, turn, route=route)
            # A quick second message is merged into one reply (the burst rule).
            if route == "new" and previous_new_job is not None and self.rng.random() < 0.07:
                self._merge(previous_new_job, into=self.jobs[index][_COL["id"]])
            previous_new_job = index if route == "new" else None
            at += self.rng.uniform(25, 420)

    def _finished_job(
        self,
        conversation: _Conversation,
        kind: str,
        at: float,
        message: str | None,
        *,
        route: str,
    ) -> int:
        rng = self.rng
        slug = conversation.broker.slug
        job = _JobRow(
            id=uuid.UUID(int=rng.getrandbits(128)).hex,
            kind=kind,
            conversation_id=conversation.id,
            received_at=at,
            route=route,
            inbound_content=message,
            broker_id=slug,
        )
        if message is not None:
            job.inbound_message_id = next(self.message_ids)
            job.delivery_id = uuid.UUID(int=rng.getrandbits(128)).hex
            conversation.message_count += 1
            conversation.last_customer_message_at = at
            if at >= self.now - PAYLOAD_RECENT_S:
                job.inbound_payload = _payload(conversation, job.inbound_message_id, message, at)
        if route == "n8n":
            job.state = "forwarded"
            job.route_reason = "rollout"
            job.broker_id = None
            job.finished_at = at + rng.uniform(0.15, 0.9)
            if rng.random() < 0.004:  # n8n could not take it: the new pipeline answered
                job.route, job.route_reason = "new", "n8n_failed"
                job.broker_id = slug
                self._answer(job, conversation)
            elif (escalation := escalation_reason(message or "")) is not None:
                # n8n hands these to a human too: the conversation leaves the bots.
                conversation.status = "handed_off"
                conversation.handoff_reason = escalation.value
                conversation.handoff_at = job.finished_at
            elif rng.random() < 0.012:
                conversation.status = "human"
            if job.state == "forwarded":
                # n8n's reply seen 2-8 s later (from the message id, so the day's random draws
                # stay as they were).
                job.n8n_replied_at = at + 2.0 + (job.inbound_message_id or 0) % 7
            self.jobs.append(job.row())
            if job.state == "forwarded":
                self.n8n_candidates.append(len(self.jobs) - 1)
            return len(self.jobs) - 1
        if kind == "greeting":
            job.delay_s = rng.uniform(0.8, 1.2)
            job.started_at = at + job.delay_s
            job.finished_at = job.started_at + rng.uniform(0.3, 0.9)
            job.send_started_at = job.finished_at - 0.2
            job.state, job.attempts = "sent", 1
            job.reply_text = conversation.broker.greeting_template.format(
                first_name=conversation.script.name.split()[0]
            )
            job.reply_message_id = next(self.message_ids)
        else:
            self._answer(job, conversation)
        self.jobs.append(job.row())
        return len(self.jobs) - 1

    def _answer(self, job: _JobRow, conversation: _Conversation) -> None:
        """What the new pipeline did with a customer message."""
        rng = self.rng
        persona = conversation.broker
        message = job.inbound_content or ""
        spike = self.in_spike(job.received_at)
        job.delay_s = rng.uniform(1.0, 6.0)
        job.due_at = job.received_at + job.delay_s
        job.started_at = job.due_at + rng.uniform(0.02, 0.3)
        llm_s = rng.lognormvariate(math.log(2.4), 0.45) * (3.2 if spike else 1.0)
        job.attempts = 1
        roll = rng.random()
        escalation = escalation_reason(message)
        if escalation is not None:
            job.escalation_reason = escalation.value
            job.finished_at = job.started_at + rng.uniform(0.4, 1.2)
            job.state = "handed_off"
            job.reply_text = handoff_message(persona, escalation)
            job.reply_message_id = next(self.message_ids)
            self._hand_off(conversation, escalation.value, job.finished_at)
        elif roll < (0.11 if spike else 0.011):
            error, detail = rng.choice(_FAILURES)(job.id, conversation.id)
            job.attempts = 3
            job.finished_at = job.started_at + 2 + 4 + 3 * llm_s
            job.state, job.error, job.error_detail = "failed", error, detail
            job.reply_text = failure_apology(persona)
            job.reply_message_id = next(self.message_ids)
            self._hand_off(conversation, "ai_failure", job.finished_at)
        elif roll < 0.03:
            job.finished_at = job.started_at + rng.uniform(0.1, 0.5)
            job.state, job.error = "skipped", "conversation human"
            conversation.status = "human"
        else:
            job.finished_at = job.started_at + llm_s
            job.state = "sent"
            if rng.random() < (0.2 if spike else 0.025):
                job.used_fallback, job.fallback_reason = True, "llm_timeout"
                job.reply_text = fallback_reply(persona)
            else:
                job.reply_text = new_pipeline_reply(persona, message, rng)
            job.reply_message_id = next(self.message_ids)
        job.send_started_at = job.finished_at - 0.25 if job.reply_message_id else None
        if job.reply_message_id:
            conversation.last_reply_at = job.finished_at
            slug = persona.slug
            self.counters.messages[slug] = self.counters.messages.get(slug, 0) + 1

    def _hand_off(self, conversation: _Conversation, reason: str, at: float) -> None:
        conversation.status = "handed_off"
        conversation.handoff_reason = reason
        conversation.handoff_at = at
        slug = conversation.broker.slug
        self.counters.handoffs[slug] = self.counters.handoffs.get(slug, 0) + 1

    def _merge(self, index: int, *, into: str) -> None:
        row = list(self.jobs[index])
        if row[_COL["state"]] != "sent":
            return
        row[_COL["state"]] = "merged"
        row[_COL["merged_into"]] = into
        row[_COL["reply_text"]] = None
        row[_COL["reply_message_id"]] = None
        row[_COL["send_started_at"]] = None
        self.jobs[index] = tuple(row)

    def _shadow_comparisons(self) -> None:
        rng = self.rng
        wanted = min(self.plan.comparisons, len(self.n8n_candidates))
        chosen = sorted(rng.sample(self.n8n_candidates, wanted))
        for number, index in enumerate(chosen, start=1):
            source = self.jobs[index]
            conversation_id = source[_COL["conversation_id"]]
            message = source[_COL["inbound_content"]]
            received_at = source[_COL["received_at"]]
            conversation = self.by_id[conversation_id]
            persona = conversation.broker
            customer = conversation.script.name.split()[0]
            fresh = self.plan.live and received_at > self.now - 90
            shadow = (
                None if fresh and rng.random() < 0.5 else new_pipeline_reply(persona, message, rng)
            )
            n8n = None if fresh else n8n_reply(customer, message, rng)
            shadow_ms = rng.lognormvariate(math.log(5200), 0.35)
            n8n_ms = rng.lognormvariate(math.log(3400), 0.3)
            score = similarity(shadow, n8n) if shadow and n8n else None
            verdict = _verdict(score, rng) if score is not None and rng.random() < 0.27 else None
            self.comparisons.append(
                (
                    number,
                    conversation_id,
                    source[_COL["inbound_message_id"]],
                    message,
                    received_at,
                    persona.slug if shadow else None,
                    shadow,
                    shadow_ms if shadow else None,
                    0 if shadow else None,
                    n8n,
                    n8n_ms if n8n else None,
                    "message_event" if n8n else None,
                    score,
                    verdict,
                    rng.choice(VERDICT_NOTES[verdict]) if verdict else None,
                    rng.choice(OPERATORS) if verdict else None,
                    min(received_at + rng.uniform(600, 7200), self.now - 60) if verdict else None,
                )
            )
            shadow_job = _JobRow(
                id=uuid.UUID(int=rng.getrandbits(128)).hex,
                kind="shadow",
                conversation_id=conversation_id,
                received_at=received_at,
                route="n8n",
                inbound_content=message,
                broker_id=persona.slug,
                comparison_id=number,
            )
            shadow_job.started_at = received_at + rng.uniform(0.05, 0.4)
            if shadow is not None:
                shadow_job.state, shadow_job.attempts = "recorded", 1
                shadow_job.finished_at = received_at + shadow_ms / 1000
                shadow_job.reply_text = shadow
            else:
                shadow_job.state, shadow_job.attempts = "running", 1
                shadow_job.lease_owner = "worker-a:shadow"
                shadow_job.lease_expires_at = self.now + 60
            self.jobs.append(shadow_job.row())

    def _unsent(self, conversations: Sequence[_Conversation]) -> None:
        """The in-flight work right now: waiting and running jobs holding broker capacity,
        a few just queued."""
        rng = self.rng
        recent = [c for c in conversations if c.status == "bot"][-200:]
        by_broker: dict[str, list[_Conversation]] = {}
        for conversation in recent:
            by_broker.setdefault(conversation.broker.slug, []).append(conversation)
        for slug, busy in WORKLOAD_NOW.items():
            pool = by_broker.get(slug) or recent
            for number in range(busy):
                conversation = pool[number % len(pool)]
                at = self.now - rng.uniform(1, 8)
                message = rng.choice(conversation.script.turns)
                job = _JobRow(
                    id=uuid.UUID(int=rng.getrandbits(128)).hex,
                    kind="reply",
                    conversation_id=conversation.id,
                    received_at=at,
                    route="new",
                    inbound_content=message,
                    broker_id=slug,
                )
                job.inbound_message_id = next(self.message_ids)
                job.inbound_payload = _payload(conversation, job.inbound_message_id, message, at)
                job.capacity_held = 1
                job.delay_s = rng.uniform(1.0, 6.0)
                job.due_at = at + job.delay_s
                if number % 3 == 0:
                    job.state, job.attempts = "running", 1
                    job.started_at = min(job.due_at, self.now)
                    job.lease_owner = f"worker-{'ab'[number % 2]}:{number}"
                    job.lease_expires_at = self.now + 55
                else:
                    job.state = "waiting"
                    job.due_at = self.now + rng.uniform(0.5, 5.0)
                self.jobs.append(job.row())
        for conversation in recent[-3:]:
            message = rng.choice(conversation.script.turns)
            job = _JobRow(
                id=uuid.UUID(int=rng.getrandbits(128)).hex,
                kind="reply",
                conversation_id=conversation.id,
                received_at=self.now - rng.uniform(0.1, 0.8),
                route="new",
                inbound_content=message,
            )
            job.inbound_message_id = next(self.message_ids)
            job.inbound_payload = _payload(
                conversation, job.inbound_message_id, message, job.received_at
            )
            self.jobs.append(job.row())

    def _brokers(self, db: sqlite3.Connection) -> None:
        for persona in PERSONAS:
            slug = persona.slug
            # The day's figures on top of an all-time history, so totals look lived in.
            base = 3 * self.counters.conversations.get(slug, 0)
            db.execute(
                "UPDATE ai_brokers SET total_conversations = ?, messages_handled = ?, "
                "handoffs = ?, updated_at = ? WHERE id = ?",
                (
                    base + self.counters.conversations.get(slug, 0),
                    7 * base + self.counters.messages.get(slug, 0),
                    base // 9 + self.counters.handoffs.get(slug, 0),
                    self.now,
                    slug,
                ),
            )
            if self.plan.live:  # a store no worker uses: the seeded day's load, Michelle full
                db.execute(
                    "UPDATE ai_brokers SET max_concurrent_chats = ?, current_workload = ? "
                    "WHERE id = ?",
                    (CAPACITY[slug], WORKLOAD_NOW[slug], slug),
                )

    def _audit(self, db: sqlite3.Connection) -> int:
        state = RolloutState(
            percentage=0,
            shadow=False,
            n8n_enabled=True,
            guard=GuardThresholds(),
            updated_at=self.start - 3600,
            updated_by="environment",
        )
        rows = []
        for when, change in self.changes:
            after = replace(
                state,
                percentage=state.percentage if change.percentage is None else change.percentage,
                shadow=True,
                queue_paused=state.queue_paused if change.paused is None else change.paused,
                updated_at=when,
                updated_by=change.actor,
            )
            rows.append(
                (
                    when,
                    change.actor,
                    change.action,
                    json.dumps(asdict(state)),
                    json.dumps(asdict(after)),
                    change.reason,
                    int(change.automatic),
                    json.dumps(change.detail) if change.detail else None,
                )
            )
            state = after
        db.executemany(
            "INSERT INTO rollout_audit (at, actor, action, before, after, reason, automatic, "
            "detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        if self.plan.live:
            db.execute(
                "INSERT INTO rollout_state (id, percentage, shadow, n8n_enabled, queue_paused, "
                "guard, updated_at, updated_by) VALUES (1, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET percentage = excluded.percentage, "
                "shadow = excluded.shadow, n8n_enabled = excluded.n8n_enabled, "
                "queue_paused = excluded.queue_paused, guard = excluded.guard, "
                "updated_at = excluded.updated_at, updated_by = excluded.updated_by",
                (
                    state.percentage,
                    int(state.shadow),
                    int(state.n8n_enabled),
                    int(state.queue_paused),
                    guard_to_json(state.guard),
                    state.updated_at,
                    state.updated_by,
                ),
            )
        return len(rows)

    def _samples(self, db: sqlite3.Connection) -> int:
        rows: list[tuple[float, str, int, int]] = []
        rng = random.Random(self.plan.random_seed + 1)
        first = int(self.start // SAMPLE_EVERY_S + 1) * SAMPLE_EVERY_S
        capacities = (
            dict(CAPACITY)
            if self.plan.live
            else {
                row[0]: row[1]
                for row in db.execute("SELECT id, max_concurrent_chats FROM ai_brokers")
            }
        )
        drift = dict.fromkeys(capacities, 0.0)  # slow random drift, as real queues wander
        for at in range(first, int(self.now), SAMPLE_EVERY_S):
            level = _busyness(at) / _PEAK
            for slug, capacity in capacities.items():
                drift[slug] = 0.9 * drift[slug] + rng.gauss(0, 0.35)
                share = BROKER_WEIGHTS.get(slug, 0.1) / max(BROKER_WEIGHTS.values())
                load = capacity * level * share * 1.1 + drift[slug]
                rows.append((at, slug, max(0, min(capacity, round(load))), capacity))
        if self.plan.live:
            rows.extend((self.now, slug, WORKLOAD_NOW[slug], CAPACITY[slug]) for slug in CAPACITY)
        db.executemany(
            "INSERT INTO broker_samples (sampled_at, broker_id, workload, capacity) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (broker_id, sampled_at) DO NOTHING",
            rows,
        )
        return len(rows)

    def _heartbeats(self, db: sqlite3.Connection) -> None:
        db.executemany(
            "INSERT INTO worker_heartbeats (worker_id, hostname, pid, concurrency, started_at, "
            "seen_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (worker_id) DO UPDATE SET "
            "seen_at = excluded.seen_at",
            [
                ("worker-a:4121", "broker-worker-a", 4121, 32, self.now - 5.5 * 3600, self.now),
                ("worker-b:4188", "broker-worker-b", 4188, 32, self.now - 5.5 * 3600, self.now),
                ("worker-b:2207", "broker-worker-b", 2207, 32, self.start, self.now - 5.6 * 3600),
            ],
        )


# -- rows --------------------------------------------------------------------------------------
@dataclass
class _JobRow:
    id: str
    kind: str
    conversation_id: int
    received_at: float
    route: str
    inbound_content: str | None
    broker_id: str | None = None
    state: str = "queued"
    attempts: int = 0
    inbound_message_id: int | None = None
    delivery_id: str | None = None
    capacity_held: int = 0
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    delay_s: float | None = None
    due_at: float | None = None
    escalation_reason: str | None = None
    started_at: float | None = None
    send_started_at: float | None = None
    finished_at: float | None = None
    reply_text: str | None = None
    reply_message_id: int | None = None
    used_fallback: bool = False
    fallback_reason: str | None = None
    error: str | None = None
    error_detail: str | None = None
    merged_into: str | None = None
    route_reason: str | None = None
    inbound_payload: str | None = None
    comparison_id: int | None = None
    n8n_replied_at: float | None = None

    def row(self) -> tuple[Any, ...]:
        updated = self.finished_at or self.started_at or self.received_at
        values = asdict(self)
        values["used_fallback"] = int(self.used_fallback)
        values["updated_at"] = updated
        return tuple(values[name] for name in _JOB_COLUMNS)


_JOB_COLUMNS = (
    "id",
    "kind",
    "conversation_id",
    "state",
    "attempts",
    "inbound_message_id",
    "inbound_content",
    "delivery_id",
    "broker_id",
    "capacity_held",
    "lease_owner",
    "lease_expires_at",
    "delay_s",
    "due_at",
    "escalation_reason",
    "received_at",
    "started_at",
    "send_started_at",
    "finished_at",
    "reply_text",
    "reply_message_id",
    "used_fallback",
    "fallback_reason",
    "error",
    "error_detail",
    "merged_into",
    "updated_at",
    "route",
    "route_reason",
    "inbound_payload",
    "comparison_id",
    "n8n_replied_at",
)
_COL = {name: index for index, name in enumerate(_JOB_COLUMNS)}
_JOB_INSERT = (
    f"INSERT INTO reply_jobs ({', '.join(_JOB_COLUMNS)}) "  # noqa: S608 - fixed column names
    f"VALUES ({', '.join('?' for _ in _JOB_COLUMNS)})"
)
_COMPARISON_INSERT = (
    "INSERT INTO shadow_comparisons (id, conversation_id, inbound_message_id, customer_message, "
    "received_at, broker_id, shadow_reply, shadow_latency_ms, shadow_used_fallback, n8n_reply, "
    "n8n_latency_ms, n8n_source, similarity, verdict, verdict_note, verdict_by, verdict_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_CONVERSATION_INSERT = (
    "INSERT INTO broker_conversations (conversation_id, broker_id, contact_id, lead_score, "
    "lead_profile, status, message_count, handoff_reason, handoff_at, last_customer_message_at, "
    "last_reply_at, assigned_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (conversation_id) DO NOTHING"
)


def _conversation_row(conversation: _Conversation) -> tuple[Any, ...]:
    script = conversation.script
    profile = {
        "loan_type": script.loan_type,
        "property_category": script.property_category,
        "monthly_income": sum(script.monthly_incomes),
        "employment_type": script.employment_type,
    }
    return (
        conversation.id,
        conversation.broker.slug,
        90_000 + conversation.id,
        40 + conversation.id % 55,
        json.dumps(profile),
        conversation.status,
        conversation.message_count,
        conversation.handoff_reason,
        conversation.handoff_at,
        conversation.last_customer_message_at,
        conversation.last_reply_at,
        conversation.started_at,
        conversation.last_reply_at or conversation.started_at,
    )


def _payload(conversation: _Conversation, message_id: int, content: str, at: float) -> str:
    """The Chatwoot `message_created` webhook body the receiver kept for this message."""
    script = conversation.script
    sender = {
        "id": 90_000 + conversation.id,
        "name": script.name,
        "email": script.email,
        "phone_number": script.phone,
        "type": "contact",
    }
    return json.dumps(
        {
            "event": "message_created",
            "id": message_id,
            "content": content,
            "content_type": "text",
            "message_type": "incoming",
            "private": False,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(at)),
            "account": {"id": 3, "name": "NextNest"},
            "inbox": {"id": 7, "name": "Website chat"},
            "sender": sender,
            "conversation": {
                "id": conversation.id,
                "inbox_id": 7,
                "status": "pending",
                "channel": "Channel::WebWidget",
                "meta": {"sender": sender, "assignee": None},
                "custom_attributes": {"broker_id": conversation.broker.slug},
            },
        },
        separators=(",", ":"),
    )


# -- what people write -------------------------------------------------------------------------
FOLLOW_UPS = (
    "Thanks, that's helpful. What documents will the bank need from me?",
    "OK noted. How long does approval usually take?",
    "Can you send me the comparison by email as well?",
    "What about the lock-in period and the penalty for early repayment?",
    "Is the valuation free or do I pay for it?",
    "Sounds good. What's the next step?",
)

# Topic → what an experienced Singapore broker would explain (the new pipeline's version and
# the legacy workflow's wording of the same point).
_ADVICE: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (
        ("concessionary", "hdb loan", "come back to hdb"),
        "Moving from the HDB concessionary loan to a bank loan is allowed, but it is one-way: "
        "once you refinance to a bank you cannot return to an HDB loan later",
        "you can refinance from HDB to a bank loan but you cannot go back to HDB afterwards",
    ),
    (
        ("bto", "downpayment", "cpf oa", "loan eligibility"),
        "For a BTO you can take the HDB loan at 2.6 % (up to 75 % LTV) or a bank loan, and "
        "your CPF Ordinary Account can cover the downpayment once you have the HFE letter",
        "for BTO flats both HDB and bank loans work and CPF can be used for the downpayment",
    ),
    (
        ("second", "ltv", "absd", "decouple"),
        "For a second residential property the LTV limit drops to 45 % and citizens pay 20 % "
        "ABSD; decoupling can help, but it has stamp duty and legal costs to weigh first",
        "a second property means a lower LTV of 45 % and 20 % ABSD for citizens",
    ),
    (
        ("tdsr", "rental income", "pledge", "show-fund"),
        "Banks cap total debt repayments at 55 % of income under TDSR; they usually count "
        "70 % of rental income, and a pledge or show-fund can top up the assessed income",
        "TDSR limits your repayments to 55 % of income and rental income counts at 70 %",
    ),
    (
        ("self-employed", "noa", "freelance", "varies"),
        "For self-employed income banks average your last two Notices of Assessment and apply "
        "a 30 % haircut, so a salaried co-borrower can raise the loan amount noticeably",
        "banks use the average of your last two NOAs with a haircut for self-employed income",
    ),
    (
        ("bridging", "otp", "exercise"),
        "A bridging loan covers the cash downpayment until your sale completes; it typically "
        "runs up to six months at around 5-6 % p.a. and can be approved within two weeks",
        "a bridging loan can cover the downpayment until your current sale completes",
    ),
    (
        ("ec", "msr", "ceiling", "progressive"),
        "ECs bought from the developer are subject to the 30 % MSR as well as TDSR, and the "
        "household income ceiling is S$16,000, so your combined S$13k qualifies",
        "EC purchases from developers are capped by MSR at 30 % and the ceiling is S$16k",
    ),
    (
        ("employment pass", "foreigner", "ep holders", "60%"),
        "As an Employment Pass holder you can borrow up to 75 % LTV, but the 60 % ABSD for "
        "foreigners applies and there is no legitimate way around it by co-buying",
        "foreigners can get up to 75 % LTV but must pay 60 % ABSD",
    ),
    (
        ("reprice", "repricing", "lock-in", "switch", "clawback"),
        "Repricing with your current bank avoids legal and valuation fees; refinancing is "
        "usually worth it when the saving exceeds about S$3,000 over the lock-in period",
        "repricing saves fees, while refinancing pays off if the saving beats the costs",
    ),
    (
        ("fixed", "sora", "floating", "rate"),
        "Two- and three-year fixed packages are around 2.5-2.7 % today, while 1M SORA packages "
        "float at roughly SORA + 0.3 %, so the choice depends on how much certainty you want",
        "fixed rates are around 2.6 % now and SORA packages float a little lower",
    ),
    (
        ("pte ltd", "company", "shophouse", "commercial"),
        "For a company purchase banks assess two to three years of audited accounts and ask "
        "the directors for personal guarantees; ABSD for entities applies only to residential",
        "company loans are assessed on the company's financials with director guarantees",
    ),
    (
        ("tenure", "61", "75", "co-borrower", "retire"),
        "Banks cap the tenure at age 65 (75 at some banks with a lower LTV); a younger "
        "co-borrower lets the bank use the income-weighted average age",
        "the loan tenure is limited by age, and a younger co-borrower can extend it",
    ),
    (
        ("upgrad", "sell first", "remission", "budget", "condo"),
        "If you buy before selling, you pay ABSD upfront and claim the remission once the HDB "
        "is sold within six months; with S$530k equity a S$1.6-1.8m condo is realistic",
        "buying first means paying ABSD and claiming remission after you sell the HDB",
    ),
)
_GENERIC = (
    "Let me pull the current packages that fit your profile and send you a clear comparison",
    "we will look at the packages that suit you and send a comparison",
)
_OPENINGS = {
    PersonaType.AGGRESSIVE: "Great question - let's get straight to the numbers.",
    PersonaType.BALANCED: "Thanks for asking, here is how it works.",
    PersonaType.CONSERVATIVE: "That's a sensible thing to check before committing.",
}
_NEXT_STEPS = {
    PersonaType.AGGRESSIVE: "Shall I lock in an in-principle approval this week while rates hold?",
    PersonaType.BALANCED: "Would you like me to run both options side by side for you?",
    PersonaType.CONSERVATIVE: "Take your time; shall I prepare the figures for you to review?",
}
_N8N_CLOSINGS = (
    "One of our mortgage specialists will follow up with suitable packages shortly.",
    "Let us know if you would like a detailed comparison.",
    "Our team will be in touch with more details.",
)


def _advice(message: str) -> tuple[str, str]:
    lowered = message.lower()
    for keywords, new, legacy in _ADVICE:
        if any(word in lowered for word in keywords):
            return new, legacy
    return _GENERIC


def new_pipeline_reply(persona: BrokerPersona, message: str, rng: random.Random) -> str:
    """The kind of reply the new pipeline writes: persona voice, the substance, a next step."""
    escalation = escalation_reason(message)
    if escalation is not None:
        return handoff_message(persona, escalation)
    advice, _ = _advice(message)
    return (
        f"{_OPENINGS[persona.type]} {advice}. {_NEXT_STEPS[persona.type]}\n\n— {persona.first_name}"
    )


def n8n_reply(customer_first_name: str, message: str, rng: random.Random) -> str:
    """The legacy workflow's reply: sometimes the same substance, sometimes a holding answer."""
    advice, legacy = _advice(message)
    style = rng.random()
    if style < 0.2:  # the legacy prompt wrote nearly the same reply
        return (
            f"Hi {customer_first_name}! {advice}. Would you like me to run both options side by "
            "side for you? — NextNest"
        )
    if style < 0.45:  # the same point in the same words
        body = f"{advice}."
    elif style < 0.8:  # the same point, shorter
        body = f"In short, {legacy}."
    else:  # the canned holding answer
        return (
            f"Hi {customer_first_name}, thanks for your message about “{message[:60]}”. "
            "One of our mortgage specialists will follow up with suitable packages shortly. "
            "— NextNest"
        )
    return f"Hi {customer_first_name}! {body} {rng.choice(_N8N_CLOSINGS)} — NextNest"


VERDICT_NOTES: dict[str, tuple[str, ...]] = {
    "better": (
        "Answers the actual question; n8n only promised a follow-up",
        "Correct LTV and ABSD figures, clear next step",
        "Warmer and more specific",
        "",
    ),
    "same": ("Both fine", "Same substance, different tone", ""),
    "worse": (
        "Too pushy for this customer",
        "Missed that they already own a property",
        "Quoted a rate we can't promise",
    ),
}


def _verdict(score: float, rng: random.Random) -> str:
    if score > 0.7:
        return rng.choices(("better", "same", "worse"), weights=(2, 7, 1))[0]
    return rng.choices(("better", "same", "worse"), weights=(6, 2, 2))[0]


# -- failures ----------------------------------------------------------------------------------
def _llm_timeout(job_id: str, conversation_id: int) -> tuple[str, str]:
    return (
        "APITimeoutError: Request timed out.",
        _traceback(
            job_id,
            [
                ("app/services/pipeline.py", 228, "_respond", "reply = self._generator.generate("),
                (
                    "app/adapters/llm.py",
                    82,
                    "generate",
                    "completion = self._client.chat.completions.create(",
                ),
                (
                    "openai/_base_client.py",
                    1047,
                    "request",
                    "raise APITimeoutError(request=request) from err",
                ),
            ],
            "openai.APITimeoutError: Request timed out.",
        ),
    )


def _chatwoot_502(job_id: str, conversation_id: int) -> tuple[str, str]:
    error = (
        f"ChatwootError: POST /api/v1/accounts/3/conversations/{conversation_id}/messages "
        "answered 502"
    )
    return (
        error,
        _traceback(
            job_id,
            [
                (
                    "app/services/pipeline.py",
                    331,
                    "_post_once",
                    "sent = self._chatwoot.send_message(",
                ),
                ("app/adapters/chatwoot.py", 188, "send_message", "return self._request("),
                ("app/adapters/chatwoot.py", 142, "_request", "raise ChatwootError("),
            ],
            f"app.adapters.chatwoot.{error}",
        ),
    )


def _rate_limited(job_id: str, conversation_id: int) -> tuple[str, str]:
    message = (
        "RateLimitError: Error code: 429 - {'error': {'message': 'Rate limit reached for "
        "gpt-5-mini on tokens per min (TPM)', 'type': 'tokens', 'code': 'rate_limit_exceeded'}}"
    )
    return (
        message,
        _traceback(
            job_id,
            [
                ("app/services/pipeline.py", 228, "_respond", "reply = self._generator.generate("),
                (
                    "app/adapters/llm.py",
                    82,
                    "generate",
                    "completion = self._client.chat.completions.create(",
                ),
                (
                    "openai/_base_client.py",
                    1062,
                    "request",
                    "raise self._make_status_error_from_response(err.response) from None",
                ),
            ],
            f"openai.{message}",
        ),
    )


_FAILURES = (_llm_timeout, _llm_timeout, _chatwoot_502, _rate_limited)


def _traceback(job_id: str, frames: list[tuple[str, int, str, str]], last: str) -> str:
    stack = traceback.StackSummary.from_list(
        [(f"/srv/ai-broker/{path}", line, name, code) for path, line, name, code in frames]
    )
    return (
        "Traceback (most recent call last):\n"
        + "".join(stack.format())
        + f"{last}\n\n(job {job_id}, attempt 3 of 3)\n"
    )


# -- the rhythm of a day -----------------------------------------------------------------------
def _busyness(at: float) -> float:
    """Relative traffic at wall-clock time `at`: quiet at night in Singapore, busy at lunch and
    in the evening."""
    hour = ((at + SGT_OFFSET_S) % 86400) / 3600
    lunch = math.exp(-(((hour - 12.5) / 2.2) ** 2))
    evening = 1.25 * math.exp(-(((hour - 20.5) / 2.0) ** 2))
    return 0.12 + lunch + evening


_PEAK = max(_busyness(h * 360.0 - SGT_OFFSET_S) for h in range(240))
