"""The embedded store: one SQLite file in DATA_DIR, shared by every local process.

WAL mode lets readers run beside the single writer; each write is one short
`BEGIN IMMEDIATE` transaction (no network call inside one), so concurrent processes and
greenlets queue on the lock for microseconds instead of deadlocking.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

from app.domain.circuit import Circuit, CircuitPosition
from app.domain.events import InboundMessage
from app.domain.jobs import UNSENT_STATES, JobKind, JobState, ReplyJob
from app.domain.personas import BrokerPersona
from app.domain.reply_plan import ReplyPlan
from app.domain.rollout import RolloutState, Route
from app.domain.similarity import similarity
from app.store.base import StoreError
from app.store.codec import guard_from_json, guard_to_json, rollout_to_dict
from app.store.models import (
    DEFAULT_RETENTION,
    NOT_DUE,
    PAUSED,
    AuditEntry,
    Broker,
    BrokerConversation,
    Claim,
    ClaimStatus,
    Comparison,
    ConversationStatus,
    InboundOutcome,
    InboundStatus,
    LatencyHistogram,
    ReapAction,
    ReapedJob,
    ReplyWindowStats,
    Retention,
    SendGate,
    SendStart,
    Verdict,
    WorkerHeartbeat,
)

SCHEMA_VERSION = "2"
# Columns added after version 1; a store created by an older build gets them at start.
_ADDED_COLUMNS = {
    "reply_jobs": (
        ("route", "TEXT NOT NULL DEFAULT 'new'"),
        ("route_reason", "TEXT"),
        ("inbound_payload", "TEXT"),
        ("comparison_id", "INTEGER"),
        ("inbound_headers", "TEXT"),
        ("n8n_replied_at", "REAL"),
    ),
}
_UNSENT = tuple(state.value for state in UNSENT_STATES)
PRUNE_BATCH = 1000
PRUNE_MAX_BATCHES = 50  # per prune pass; the next pass (minutes later) goes on


class SqliteStore:
    """One connection per process, shared under a lock.

    A connection per thread would mean one per greenlet in a gevent worker: hundreds of
    connections, about 0.3 MB each, for no gain, since SQLite admits one writer at a time and
    no transaction here ever waits on the network.
    """

    def __init__(self, path: Path, *, busy_timeout_s: float = 10.0) -> None:
        self._path = path
        self._busy_timeout_s = busy_timeout_s
        self._lock = threading.RLock()
        self._shared: sqlite3.Connection | None = None
        self._owner_pid = 0

    # -- connections -------------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        """The process's connection (call with the lock held); a forked child opens its own."""
        if self._shared is None or self._owner_pid != os.getpid():
            self._path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(
                self._path,
                timeout=self._busy_timeout_s,
                isolation_level=None,
                check_same_thread=False,
            )
            connection.row_factory = sqlite3.Row
            connection.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives process crashes (what we must survive); only an OS
            # crash can lose the last commits.
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute("PRAGMA foreign_keys=ON")
            self._shared, self._owner_pid = connection, os.getpid()
        return self._shared

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            connection = self._connection()
            try:
                connection.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"store is not writable ({exc})") from exc
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            else:
                try:
                    connection.execute("COMMIT")
                except sqlite3.Error as exc:
                    connection.execute("ROLLBACK")
                    raise StoreError(f"store commit failed ({exc})") from exc

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._connection().execute(sql, tuple(params)).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"store read failed ({exc})") from exc

    # -- lifecycle ---------------------------------------------------------------------------
    def init_schema(self) -> None:
        schema = resources.files("app.store").joinpath("schema.sql").read_text()
        with self._lock:
            connection = self._connection()
            _add_missing_columns(connection)
            connection.executescript(schema)
            connection.execute(
                "INSERT INTO schema_meta (key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (SCHEMA_VERSION,),
            )

    def ping(self) -> None:
        try:
            rows = self._read("SELECT value FROM schema_meta WHERE key = 'schema_version'")
        except StoreError as exc:
            if "no such table" not in str(exc):
                raise
            rows = []
        if not rows:
            raise StoreError(f"no schema in {self._path}: run `ai-broker db init`")
        if rows[0]["value"] != SCHEMA_VERSION:
            raise StoreError(
                f"schema version {rows[0]['value']}, this build needs {SCHEMA_VERSION}: "
                "run `ai-broker db init`"
            )

    def close(self) -> None:
        with self._lock:
            if self._shared is not None and self._owner_pid == os.getpid():
                self._shared.close()
            self._shared = None

    # -- brokers and capacity ----------------------------------------------------------------
    def seed_brokers(self, personas: Iterable[BrokerPersona], *, max_concurrent_chats: int) -> int:
        inserted = 0
        now = time.time()
        with self._write() as db:
            for persona in personas:
                cursor = db.execute(
                    "INSERT INTO ai_brokers (id, name, persona_type, title, specialty, "
                    "max_concurrent_chats, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                    (
                        persona.slug,
                        persona.name,
                        persona.type.value,
                        persona.title,
                        persona.specialty,
                        max_concurrent_chats,
                        now,
                        now,
                    ),
                )
                inserted += cursor.rowcount
        return inserted

    def list_brokers(self) -> list[Broker]:
        return [_broker(row) for row in self._read("SELECT * FROM ai_brokers ORDER BY rowid")]

    def assign_broker(
        self,
        conversation_id: int,
        preferred_broker_id: str | None,
        *,
        contact_id: int | None = None,
        lead_score: int | None = None,
        lead_profile: Mapping[str, object] | None = None,
        now: float,
    ) -> BrokerConversation:
        with self._write() as db:
            return _assign_broker(
                db,
                conversation_id,
                preferred_broker_id,
                contact_id=contact_id,
                lead_score=lead_score,
                lead_profile=lead_profile,
                now=now,
            )

    def get_conversation(self, conversation_id: int) -> BrokerConversation | None:
        rows = self._read(
            "SELECT * FROM broker_conversations WHERE conversation_id = ?", (conversation_id,)
        )
        return _conversation(rows[0]) if rows else None

    def hold_capacity(self, job_id: str, broker_id: str, *, now: float) -> bool:
        with self._write() as db:
            return _hold_capacity(db, job_id, broker_id, now=now)

    def release_capacity(self, job_id: str, *, now: float) -> None:
        with self._write() as db:
            _release(db, job_id, now)

    def set_conversation_status(
        self, conversation_id: int, status: ConversationStatus, reason: str, *, now: float
    ) -> list[str]:
        with self._write() as db:
            return _set_conversation_status(db, conversation_id, status, reason, now=now)

    def record_delivered_reply(
        self,
        conversation_id: int,
        broker_id: str,
        *,
        customer_messages: int,
        handoff_reason: str | None,
        now: float,
    ) -> None:
        with self._write() as db:
            return _record_delivered_reply(
                db,
                conversation_id,
                broker_id,
                customer_messages=customer_messages,
                handoff_reason=handoff_reason,
                now=now,
            )

    # -- the reply-job ledger ----------------------------------------------------------------
    def record_inbound(
        self,
        message: InboundMessage,
        *,
        delivery_id: str | None,
        now: float,
        route: Route = Route.NEW,
        route_reason: str | None = None,
        payload: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> InboundOutcome:
        with self._write() as db:
            return _record_inbound(
                db,
                message,
                delivery_id=delivery_id,
                now=now,
                route=route,
                route_reason=route_reason,
                payload=payload,
                headers=headers,
            )

    def admit_inbound(
        self,
        message: InboundMessage,
        *,
        delivery_id: str | None,
        now: float,
        plan: ReplyPlan,
        route_reason: str | None = None,
        payload: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> InboundOutcome:
        with self._write() as db:
            outcome = _record_inbound(
                db,
                message,
                delivery_id=delivery_id,
                now=now,
                route=Route.NEW,
                route_reason=route_reason,
                payload=payload,
                headers=headers,
            )
            if outcome.status is not InboundStatus.RECORDED or outcome.job is None:
                return outcome
            return replace(outcome, job=_schedule_job(db, outcome.job.id, plan=plan, now=now))

    def schedule_job(self, job_id: str, *, plan: ReplyPlan, now: float) -> ReplyJob | None:
        with self._write() as db:
            return _schedule_job(db, job_id, plan=plan, now=now)

    def create_greeting_job(self, conversation_id: int, broker_id: str, *, now: float) -> ReplyJob:
        with self._write() as db:
            job_id = _new_job_id()
            db.execute(
                "INSERT INTO reply_jobs (id, kind, conversation_id, state, broker_id, "
                "received_at, updated_at) VALUES (?, 'greeting', ?, 'queued', ?, ?, ?)",
                (job_id, conversation_id, broker_id, now, now),
            )
            db.execute(
                "UPDATE broker_conversations SET greeting_job_id = ?, updated_at = ? "
                "WHERE conversation_id = ?",
                (job_id, now, conversation_id),
            )
            return _job_by_id(db, job_id)

    def get_job(self, job_id: str) -> ReplyJob | None:
        rows = self._read("SELECT * FROM reply_jobs WHERE id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    def list_jobs(
        self,
        *,
        states: Iterable[JobState] | None = None,
        conversation_id: int | None = None,
        limit: int = 100,
    ) -> list[ReplyJob]:
        clauses: list[str] = []
        params: list[Any] = []
        if states is not None:
            values = [state.value for state in states]
            clauses.append(f"state IN ({_marks(values)})")
            params.extend(values)
        if conversation_id is not None:
            clauses.append("conversation_id = ?")
            params.append(conversation_id)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._read(
            f"SELECT * FROM reply_jobs {where} ORDER BY seq DESC LIMIT ?",  # noqa: S608
            [*params, limit],
        )
        return [_job(row) for row in rows]

    def prepare_job(
        self,
        job_id: str,
        *,
        broker_id: str,
        delay_s: float,
        escalation_reason: str | None,
        now: float,
    ) -> ReplyJob | None:
        with self._write() as db:
            return _prepare_job(
                db,
                job_id,
                broker_id=broker_id,
                delay_s=delay_s,
                escalation_reason=escalation_reason,
                now=now,
            )

    def claim_job(
        self, job_id: str, *, owner: str, lease_s: float, coalesce_window_s: float, now: float
    ) -> Claim:
        with self._write() as db:
            paused = db.execute("SELECT queue_paused FROM rollout_state WHERE id = 1").fetchone()
            if paused is not None and paused["queue_paused"]:
                # The job waits in the ledger; resume (or the reaper) enqueues it again.
                return Claim(ClaimStatus.NOT_CLAIMABLE, None, reason=PAUSED)
            claim = _claim_job(
                db,
                job_id,
                owner=owner,
                lease_s=lease_s,
                coalesce_window_s=coalesce_window_s,
                now=now,
            )
            if claim.status is not ClaimStatus.CLAIMED or claim.job is None:
                return claim
            row = db.execute(
                "SELECT * FROM broker_conversations WHERE conversation_id = ?",
                (claim.job.conversation_id,),
            ).fetchone()
            return replace(claim, conversation=_conversation(row) if row is not None else None)

    def renew_lease(self, job_id: str, *, owner: str, lease_s: float, now: float) -> bool:
        with self._write() as db:
            return bool(
                db.execute(
                    "UPDATE reply_jobs SET lease_expires_at = ?, updated_at = ? "
                    "WHERE id = ? AND state = 'running' AND lease_owner = ?",
                    (now + lease_s, now, job_id, owner),
                ).rowcount
            )

    def begin_send(self, job_id: str, *, owner: str, now: float) -> ReplyJob | None:
        with self._write() as db:
            return _begin_send(db, job_id, owner=owner, now=now)

    def start_send(self, job_id: str, *, owner: str, rate_per_s: float, now: float) -> SendStart:
        with self._write() as db:
            running = db.execute(
                "SELECT conversation_id FROM reply_jobs WHERE id = ? AND state = 'running' "
                "AND lease_owner = ?",
                (job_id, owner),
            ).fetchone()
            if running is None:
                return SendStart(SendGate.LOST)
            status = _conversation_status(db, running["conversation_id"])
            if status is not ConversationStatus.BOT:
                reason = f"conversation {status.value}"
                _finish_job(db, job_id, owner=owner, state=JobState.SKIPPED, now=now, error=reason)
                return SendStart(SendGate.NOT_BOT, reason=reason)
            wait_s = _acquire_send_slot(db, rate_per_s, now=now)
            if wait_s > 0:
                return SendStart(SendGate.WAIT, wait_s=wait_s)
            return SendStart(SendGate.GO, _begin_send(db, job_id, owner=owner, now=now))

    def complete_job(
        self,
        job_id: str,
        *,
        owner: str,
        state: JobState,
        now: float,
        broker_id: str,
        customer_messages: int,
        handoff_reason: str | None = None,
        reply_text: str | None = None,
        reply_message_id: int | None = None,
        used_fallback: bool = False,
        fallback_reason: str | None = None,
        error: str | None = None,
        error_detail: str | None = None,
    ) -> bool:
        with self._write() as db:
            finished = _finish_job(
                db,
                job_id,
                owner=owner,
                state=state,
                now=now,
                reply_text=reply_text,
                reply_message_id=reply_message_id,
                used_fallback=used_fallback,
                fallback_reason=fallback_reason,
                error=error,
                error_detail=error_detail,
            )
            if not finished:
                return False
            conversation_id = int(_job_by_id(db, job_id).conversation_id)
            _record_delivered_reply(
                db,
                conversation_id,
                broker_id,
                customer_messages=customer_messages,
                handoff_reason=handoff_reason,
                now=now,
            )
            if handoff_reason:
                _set_conversation_status(
                    db, conversation_id, ConversationStatus.HANDED_OFF, handoff_reason, now=now
                )
            return True

    def finish_job(
        self,
        job_id: str,
        *,
        owner: str | None,
        state: JobState,
        now: float,
        reply_text: str | None = None,
        reply_message_id: int | None = None,
        used_fallback: bool = False,
        fallback_reason: str | None = None,
        error: str | None = None,
        error_detail: str | None = None,
    ) -> bool:
        with self._write() as db:
            return _finish_job(
                db,
                job_id,
                owner=owner,
                state=state,
                now=now,
                reply_text=reply_text,
                reply_message_id=reply_message_id,
                used_fallback=used_fallback,
                fallback_reason=fallback_reason,
                error=error,
                error_detail=error_detail,
            )

    def retry_job(
        self,
        job_id: str,
        *,
        owner: str,
        due_at: float,
        error: str,
        error_detail: str | None,
        now: float,
        min_attempts: int = 0,
    ) -> bool:
        with self._write() as db:
            return bool(
                db.execute(
                    "UPDATE reply_jobs SET state = 'waiting', due_at = ?, error = ?, "
                    "error_detail = ?, lease_owner = NULL, lease_expires_at = NULL, "
                    "attempts = MAX(attempts, ?), updated_at = ? "
                    "WHERE id = ? AND state = 'running' AND lease_owner = ?",
                    (due_at, error, error_detail, min_attempts, now, job_id, owner),
                ).rowcount
            )

    def hand_back(self, *, owner_prefix: str, now: float) -> list[str]:
        with self._write() as db:
            rows = db.execute(
                "SELECT id FROM reply_jobs WHERE state = 'running' "
                "AND substr(lease_owner, 1, ?) = ?",
                (len(owner_prefix), owner_prefix),
            ).fetchall()
            for row in rows:
                db.execute(
                    "UPDATE reply_jobs SET state = 'waiting', due_at = ?, lease_owner = NULL, "
                    "lease_expires_at = NULL, updated_at = ? WHERE id = ?",
                    (now, now, row["id"]),
                )
            return [row["id"] for row in rows]

    def reap(self, *, now: float, stale_after_s: float, limit: int = 500) -> list[ReapedJob]:
        stale = now - stale_after_s
        with self._write() as db:
            rows = db.execute(
                "SELECT id, state, due_at FROM reply_jobs WHERE "
                "(state = 'running' AND lease_expires_at <= ?) "
                "OR (state IN ('queued', 'forwarding') AND updated_at <= ?) "
                "OR (state = 'waiting' AND due_at <= ? AND updated_at <= ?) "
                "ORDER BY seq LIMIT ?",
                (now, stale, stale, stale, limit),
            ).fetchall()
            reaped: list[ReapedJob] = []
            for row in rows:
                queued = row["state"] in ("queued", "forwarding")
                action = ReapAction.PREPARE if queued else ReapAction.RESPOND
                if row["state"] == "forwarding":
                    # The receiver died between recording the message and hearing n8n's answer.
                    # The new pipeline takes it; it stays silent if n8n did answer after all.
                    db.execute(
                        "UPDATE reply_jobs SET state = 'queued', route = 'new', "
                        "route_reason = 'forward_unconfirmed', updated_at = ? WHERE id = ?",
                        (now, row["id"]),
                    )
                    reaped.append(ReapedJob(row["id"], action, None))
                    continue
                if row["state"] == "running":
                    # The worker that held the lease is gone: hand the job to the next one.
                    db.execute(
                        "UPDATE reply_jobs SET state = 'waiting', due_at = ?, lease_owner = NULL, "
                        "lease_expires_at = NULL, updated_at = ? WHERE id = ?",
                        (now, now, row["id"]),
                    )
                    due_at = now
                else:
                    db.execute(
                        "UPDATE reply_jobs SET updated_at = ? WHERE id = ?", (now, row["id"])
                    )
                    due_at = row["due_at"]
                reaped.append(ReapedJob(row["id"], action, due_at))
            return reaped

    # -- rollout -----------------------------------------------------------------------------
    def get_rollout(self, *, initial: RolloutState) -> RolloutState:
        rows = self._read("SELECT * FROM rollout_state WHERE id = 1")
        if rows:
            return _rollout(rows[0])
        with self._write() as db:
            db.execute(
                "INSERT INTO rollout_state (id, percentage, shadow, n8n_enabled, queue_paused, "
                "guard, updated_at, updated_by) VALUES (1, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO NOTHING",
                _rollout_params(initial),
            )
            return _rollout(db.execute("SELECT * FROM rollout_state WHERE id = 1").fetchone())

    def save_rollout(
        self,
        state: RolloutState,
        *,
        expected: RolloutState,
        action: str,
        reason: str,
        automatic: bool,
        detail: Mapping[str, object] | None = None,
    ) -> bool:
        with self._write() as db:
            changed = db.execute(
                "UPDATE rollout_state SET percentage = ?, shadow = ?, n8n_enabled = ?, "
                "queue_paused = ?, guard = ?, updated_at = ?, updated_by = ? "
                "WHERE id = 1 AND updated_at = ?",
                (*_rollout_params(state), expected.updated_at),
            ).rowcount
            if not changed:
                return False
            db.execute(
                "INSERT INTO rollout_audit (at, actor, action, before, after, reason, automatic, "
                "detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    state.updated_at,
                    state.updated_by,
                    action,
                    json.dumps(rollout_to_dict(expected)),
                    json.dumps(rollout_to_dict(state)),
                    reason,
                    int(automatic),
                    json.dumps(detail) if detail is not None else None,
                ),
            )
            return True

    def audit_log(self, *, limit: int = 100) -> list[AuditEntry]:
        rows = self._read("SELECT * FROM rollout_audit ORDER BY id DESC LIMIT ?", (limit,))
        return [
            AuditEntry(
                id=row["id"],
                at=row["at"],
                actor=row["actor"],
                action=row["action"],
                before=json.loads(row["before"]),
                after=json.loads(row["after"]),
                reason=row["reason"],
                automatic=bool(row["automatic"]),
                detail=json.loads(row["detail"]) if row["detail"] else None,
            )
            for row in rows
        ]

    # -- n8n hand-over -----------------------------------------------------------------------
    def forward_outcome(
        self, job_id: str, *, accepted: bool, reason: str, now: float
    ) -> ReplyJob | None:
        with self._write() as db:
            if accepted:
                changed = db.execute(
                    "UPDATE reply_jobs SET state = 'forwarded', route = 'n8n', route_reason = ?, "
                    "finished_at = ?, updated_at = ? "
                    "WHERE id = ? AND state IN ('forwarding', 'cancelled')",
                    (reason, now, now, job_id),
                ).rowcount
            else:
                # n8n could not take it: the new pipeline answers instead, so nothing is lost.
                changed = db.execute(
                    "UPDATE reply_jobs SET state = 'queued', route = 'new', route_reason = ?, "
                    "finished_at = NULL, error = NULL, updated_at = ? "
                    "WHERE id = ? AND state IN ('forwarding', 'cancelled')",
                    (reason, now, job_id),
                ).rowcount
            return _job_by_id(db, job_id) if changed else None

    def mark_n8n_answered(self, conversation_id: int, *, at: float) -> int:
        with self._write() as db:
            return db.execute(
                "UPDATE reply_jobs SET n8n_replied_at = ? WHERE conversation_id = ? AND "
                "kind = 'reply' AND state = 'forwarded' AND n8n_replied_at IS NULL "
                "AND received_at <= ?",
                (at, conversation_id, at),
            ).rowcount

    def requeue_silent_forwards(
        self, *, now: float, silent_after_s: float, horizon_s: float, limit: int = 200
    ) -> list[ReplyJob]:
        with self._write() as db:
            rows = db.execute(
                "SELECT id, inbound_message_id FROM reply_jobs WHERE kind = 'reply' "
                "AND state = 'forwarded' AND n8n_replied_at IS NULL AND finished_at <= ? "
                "AND finished_at > ? ORDER BY seq LIMIT ?",
                (now - silent_after_s, now - silent_after_s - horizon_s, limit),
            ).fetchall()
            for row in rows:
                db.execute(
                    "UPDATE reply_jobs SET state = 'queued', route = 'new', "
                    "route_reason = 'n8n_silent', finished_at = NULL, updated_at = ? WHERE id = ?",
                    (now, row["id"]),
                )
                db.execute(
                    "UPDATE shadow_comparisons SET n8n_source = 'silent' "
                    "WHERE inbound_message_id = ? AND n8n_reply IS NULL",
                    (row["inbound_message_id"],),
                )
            return [_job_by_id(db, row["id"]) for row in rows]

    def cancel_unsent_replies(self, *, reason: str, now: float) -> list[ReplyJob]:
        with self._write() as db:
            # A running job that has not stamped send_started_at cannot send any more:
            # begin_send checks the state in the same database, so one of the two wins.
            rows = db.execute(
                "SELECT id FROM reply_jobs WHERE kind = 'reply' AND route = 'new' AND "
                "(state IN ('queued', 'waiting') OR "
                "(state = 'running' AND send_started_at IS NULL)) ORDER BY seq"
            ).fetchall()
            for row in rows:
                _release(db, row["id"], now)
                db.execute(
                    "UPDATE reply_jobs SET state = 'cancelled', error = ?, lease_owner = NULL, "
                    "lease_expires_at = NULL, finished_at = ?, updated_at = ? WHERE id = ?",
                    (reason, now, now, row["id"]),
                )
            return [_job_by_id(db, row["id"]) for row in rows]

    def cancel_job(self, job_id: str, *, reason: str, now: float) -> bool:
        with self._write() as db:
            job = db.execute(
                "SELECT state, send_started_at FROM reply_jobs WHERE id = ?", (job_id,)
            ).fetchone()
            cancellable = job is not None and (
                job["state"] in _UNSENT
                or (job["state"] == "running" and job["send_started_at"] is None)
            )
            if not cancellable:
                return False
            _release(db, job_id, now)
            db.execute(
                "UPDATE reply_jobs SET state = 'cancelled', error = ?, lease_owner = NULL, "
                "lease_expires_at = NULL, finished_at = ?, updated_at = ? WHERE id = ?",
                (reason, now, now, job_id),
            )
            return True

    def requeue_job(self, job_id: str, *, now: float) -> ReplyJob | None:
        with self._write() as db:
            changed = db.execute(
                "UPDATE reply_jobs SET state = 'queued', attempts = 0, error = NULL, "
                "error_detail = NULL, finished_at = NULL, send_started_at = NULL, "
                "updated_at = ? WHERE id = ? AND state IN ('failed', 'cancelled')",
                (now, job_id),
            ).rowcount
            return _job_by_id(db, job_id) if changed else None

    # -- shadow comparisons ------------------------------------------------------------------
    def create_shadow(self, message: InboundMessage, *, now: float) -> ReplyJob | None:
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO shadow_comparisons (conversation_id, inbound_message_id, "
                "customer_message, received_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (inbound_message_id) DO NOTHING",
                (message.conversation_id, message.message_id, message.content, now),
            )
            if not cursor.rowcount:
                return None
            job_id = _new_job_id()
            db.execute(
                "INSERT INTO reply_jobs (id, kind, conversation_id, state, inbound_content, "
                "received_at, updated_at, route, comparison_id) "
                "VALUES (?, 'shadow', ?, 'queued', ?, ?, ?, 'n8n', ?)",
                (job_id, message.conversation_id, message.content, now, now, cursor.lastrowid),
            )
            return _job_by_id(db, job_id)

    def record_shadow_reply(
        self,
        comparison_id: int,
        *,
        reply: str,
        latency_ms: float,
        used_fallback: bool,
        broker_id: str,
    ) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE shadow_comparisons SET shadow_reply = ?, shadow_latency_ms = ?, "
                "shadow_used_fallback = ?, broker_id = ? WHERE id = ?",
                (reply, latency_ms, int(used_fallback), broker_id, comparison_id),
            )
            _score(db, comparison_id)

    def record_n8n_reply(
        self,
        conversation_id: int,
        *,
        reply: str,
        at: float,
        source: str,
        inbound_message_id: int | None = None,
    ) -> Comparison | None:
        with self._write() as db:
            if inbound_message_id is not None:
                row = db.execute(
                    "SELECT id, received_at FROM shadow_comparisons WHERE inbound_message_id = ? "
                    "AND n8n_reply IS NULL",
                    (inbound_message_id,),
                ).fetchone()
            else:
                row = db.execute(
                    "SELECT id, received_at FROM shadow_comparisons WHERE conversation_id = ? "
                    "AND n8n_reply IS NULL AND received_at <= ? ORDER BY id DESC LIMIT 1",
                    (conversation_id, at),
                ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE shadow_comparisons SET n8n_reply = ?, n8n_latency_ms = ?, n8n_source = ? "
                "WHERE id = ?",
                (reply, max(0.0, (at - row["received_at"]) * 1000), source, row["id"]),
            )
            _score(db, row["id"])
            return comparison_from_row(
                db.execute("SELECT * FROM shadow_comparisons WHERE id = ?", (row["id"],)).fetchone()
            )

    def set_verdict(
        self, comparison_id: int, verdict: Verdict, *, note: str, actor: str, now: float
    ) -> bool:
        with self._write() as db:
            return bool(
                db.execute(
                    "UPDATE shadow_comparisons SET verdict = ?, verdict_note = ?, verdict_by = ?, "
                    "verdict_at = ? WHERE id = ?",
                    (verdict.value, note, actor, now, comparison_id),
                ).rowcount
            )

    def get_comparison(self, comparison_id: int) -> Comparison | None:
        rows = self._read("SELECT * FROM shadow_comparisons WHERE id = ?", (comparison_id,))
        return comparison_from_row(rows[0]) if rows else None

    def list_comparisons(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        broker_id: str | None = None,
        max_similarity: float | None = None,
        unrated: bool = False,
        conversation_id: int | None = None,
        limit: int = 200,
    ) -> list[Comparison]:
        clauses, params = ["1 = 1"], []  # type: list[str], list[Any]
        for clause, value in (
            ("received_at >= ?", since),
            ("received_at < ?", until),
            ("broker_id = ?", broker_id),
            ("similarity <= ?", max_similarity),
            ("conversation_id = ?", conversation_id),
        ):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        if unrated:
            clauses.append("verdict IS NULL")
        rows = self._read(
            f"SELECT * FROM shadow_comparisons WHERE {' AND '.join(clauses)} "  # noqa: S608
            "ORDER BY id DESC LIMIT ?",
            [*params, limit],
        )
        return [comparison_from_row(row) for row in rows]

    # -- circuit breakers --------------------------------------------------------------------
    def get_circuit(self, name: str) -> Circuit:
        rows = self._read("SELECT * FROM circuit_breakers WHERE name = ?", (name,))
        if not rows:
            return Circuit()
        row = rows[0]
        return Circuit(
            position=CircuitPosition(row["position"]),
            consecutive_failures=row["consecutive_failures"],
            opened_at=row["opened_at"],
            probe_started_at=row["probe_started_at"],
            version=row["version"],
        )

    def swap_circuit(self, name: str, *, expected_version: int, circuit: Circuit) -> bool:
        params = (
            circuit.position.value,
            circuit.consecutive_failures,
            circuit.opened_at,
            circuit.probe_started_at,
            expected_version + 1,
        )
        with self._write() as db:
            if expected_version == 0:
                inserted = db.execute(
                    "INSERT INTO circuit_breakers (name, position, consecutive_failures, "
                    "opened_at, probe_started_at, version) VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (name) DO NOTHING",
                    (name, *params),
                ).rowcount
                return bool(inserted)
            return bool(
                db.execute(
                    "UPDATE circuit_breakers SET position = ?, consecutive_failures = ?, "
                    "opened_at = ?, probe_started_at = ?, version = ? "
                    "WHERE name = ? AND version = ?",
                    (*params, name, expected_version),
                ).rowcount
            )

    # -- the new pipeline's health -----------------------------------------------------------
    def reply_window_stats(
        self, *, since: float, now: float, overdue_s: float = 30.0
    ) -> ReplyWindowStats:
        row = self._read(
            "WITH window_jobs AS (SELECT state, used_fallback, finished_at - received_at AS "
            "latency FROM reply_jobs WHERE kind = 'reply' AND route = 'new' "
            "AND state IN ('sent', 'handed_off', 'failed') AND finished_at >= ?), "
            # Nearest rank, as percentile_disc in PostgreSQL: the first rank >= fraction * n.
            "ranked AS (SELECT latency, ROW_NUMBER() OVER (ORDER BY latency) AS rn, "
            "COUNT(*) OVER () AS n FROM window_jobs WHERE state IN ('sent', 'handed_off')) "
            "SELECT (SELECT COUNT(*) FROM window_jobs) AS finished, "
            "(SELECT COALESCE(SUM(state = 'failed'), 0) FROM window_jobs) AS failed, "
            "(SELECT COALESCE(SUM(state = 'sent'), 0) FROM window_jobs) AS sent, "
            "(SELECT COALESCE(SUM(state = 'sent' AND used_fallback = 1), 0) FROM window_jobs) "
            "AS fallbacks, "
            "(SELECT MIN(CASE WHEN rn * 100 >= 50 * n THEN latency END) FROM ranked) AS p50, "
            "(SELECT MIN(CASE WHEN rn * 100 >= 95 * n THEN latency END) FROM ranked) AS p95, "
            "(SELECT COUNT(*) FROM reply_jobs WHERE state IN ('queued', 'waiting') "
            "AND COALESCE(due_at, received_at) < ?) AS backlog",
            (since, now - overdue_s),
        )[0]
        return ReplyWindowStats(
            finished=row["finished"],
            failed=row["failed"],
            sent=row["sent"],
            fallbacks=row["fallbacks"],
            p50_s=row["p50"],
            p95_s=row["p95"],
            backlog=row["backlog"],
        )

    # -- shared runtime state ----------------------------------------------------------------
    def acquire_send_slot(self, rate_per_s: float, *, now: float) -> float:
        with self._write() as db:
            return _acquire_send_slot(db, rate_per_s, now=now)

    def heartbeat(self, beat: WorkerHeartbeat) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO worker_heartbeats (worker_id, hostname, pid, concurrency, "
                "started_at, seen_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (worker_id) "
                "DO UPDATE SET seen_at = excluded.seen_at",
                (
                    beat.worker_id,
                    beat.hostname,
                    beat.pid,
                    beat.concurrency,
                    beat.started_at,
                    beat.seen_at,
                ),
            )

    def live_workers(self, *, since: float) -> list[WorkerHeartbeat]:
        rows = self._read(
            "SELECT * FROM worker_heartbeats WHERE seen_at >= ? ORDER BY started_at", (since,)
        )
        return [
            WorkerHeartbeat(
                worker_id=row["worker_id"],
                hostname=row["hostname"],
                pid=row["pid"],
                concurrency=row["concurrency"],
                started_at=row["started_at"],
                seen_at=row["seen_at"],
            )
            for row in rows
        ]

    def count(self, name: str, label: str, amount: int = 1) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO metric_counters (name, label, value) VALUES (?, ?, ?) "
                "ON CONFLICT (name, label) DO UPDATE SET value = value + excluded.value",
                (name, label, amount),
            )

    def counters(self, name: str) -> dict[str, int]:
        rows = self._read("SELECT label, value FROM metric_counters WHERE name = ?", (name,))
        return {row["label"]: row["value"] for row in rows}

    def job_state_counts(self) -> dict[str, int]:
        rows = self._read("SELECT state, COUNT(*) AS n FROM reply_jobs GROUP BY state")
        return {row["state"]: row["n"] for row in rows}

    def reply_latency_histogram(
        self, *, since: float, bounds_s: Sequence[float]
    ) -> LatencyHistogram:
        counts = ", ".join(
            f"COALESCE(SUM(latency <= ?), 0) AS b{index}" for index in range(len(bounds_s))
        )
        row = self._read(
            f"SELECT {counts}{', ' if counts else ''}COUNT(*) AS n, "  # noqa: S608
            "COALESCE(SUM(latency), 0.0) AS total FROM (SELECT finished_at - received_at AS "
            "latency FROM reply_jobs WHERE reply_message_id IS NOT NULL AND finished_at >= ?)",
            (*bounds_s, since),
        )[0]
        return LatencyHistogram(
            bounds_s=tuple(bounds_s),
            cumulative=tuple(int(row[f"b{index}"]) for index in range(len(bounds_s))),
            count=int(row["n"]),
            sum_s=float(row["total"]),
        )

    def prune(self, *, now: float, retention: Retention = DEFAULT_RETENTION) -> int:
        statements = (
            (
                "DELETE FROM webhook_deliveries WHERE rowid IN (SELECT rowid FROM "
                "webhook_deliveries WHERE received_at < ? LIMIT ?)",
                now - retention.deliveries_s,
            ),
            (
                "DELETE FROM send_windows WHERE rowid IN (SELECT rowid FROM send_windows "
                "WHERE window_start < ? LIMIT ?)",
                now - 60,
            ),
            (
                "DELETE FROM worker_heartbeats WHERE rowid IN (SELECT rowid FROM "
                "worker_heartbeats WHERE seen_at < ? LIMIT ?)",
                now - retention.heartbeats_s,
            ),
            # The raw webhook (the customer's details) is only needed while the job may still
            # be handed to n8n.
            (
                "UPDATE reply_jobs SET inbound_payload = NULL WHERE seq IN (SELECT seq FROM "
                "reply_jobs WHERE inbound_payload IS NOT NULL AND finished_at < ? LIMIT ?)",
                now - retention.payloads_s,
            ),
            (
                "DELETE FROM reply_jobs WHERE seq IN (SELECT seq FROM reply_jobs "
                "WHERE finished_at < ? LIMIT ?)",
                now - retention.jobs_s,
            ),
            (
                "DELETE FROM shadow_comparisons WHERE id IN (SELECT id FROM shadow_comparisons "
                "WHERE received_at < ? LIMIT ?)",
                now - retention.comparisons_s,
            ),
        )
        total = 0
        # One short transaction per batch: the single writer lock is never held for long.
        for _ in range(PRUNE_MAX_BATCHES):
            with self._write() as db:
                changed = sum(
                    db.execute(statement, (before, PRUNE_BATCH)).rowcount
                    for statement, before in statements
                )
            total += changed
            if changed == 0:
                break
        return total


def _assign_broker(
    db: sqlite3.Connection,
    conversation_id: int,
    preferred_broker_id: str | None,
    *,
    contact_id: int | None = None,
    lead_score: int | None = None,
    lead_profile: Mapping[str, object] | None = None,
    now: float,
) -> BrokerConversation:
    existing = db.execute(
        "SELECT * FROM broker_conversations WHERE conversation_id = ?", (conversation_id,)
    ).fetchone()
    if existing is not None:
        if lead_profile is not None:
            db.execute(
                "UPDATE broker_conversations SET lead_profile = ?, lead_score = ?, "
                "contact_id = COALESCE(?, contact_id), updated_at = ? "
                "WHERE conversation_id = ?",
                (json.dumps(lead_profile), lead_score, contact_id, now, conversation_id),
            )
            existing = db.execute(
                "SELECT * FROM broker_conversations WHERE conversation_id = ?",
                (conversation_id,),
            ).fetchone()
        return _conversation(existing)
    broker_id = _pick_broker(db, preferred_broker_id)
    db.execute(
        "INSERT INTO broker_conversations (conversation_id, broker_id, contact_id, "
        "lead_score, lead_profile, assigned_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            conversation_id,
            broker_id,
            contact_id,
            lead_score,
            json.dumps(lead_profile) if lead_profile is not None else None,
            now,
            now,
        ),
    )
    db.execute(
        "UPDATE ai_brokers SET total_conversations = total_conversations + 1, "
        "updated_at = ? WHERE id = ?",
        (now, broker_id),
    )
    row = db.execute(
        "SELECT * FROM broker_conversations WHERE conversation_id = ?", (conversation_id,)
    ).fetchone()
    return _conversation(row)


def _hold_capacity(db: sqlite3.Connection, job_id: str, broker_id: str, *, now: float) -> bool:
    job = db.execute(
        "SELECT capacity_held, state FROM reply_jobs WHERE id = ?", (job_id,)
    ).fetchone()
    if job is None:
        raise StoreError(f"no reply job {job_id}")
    if job["capacity_held"]:
        return True
    if JobState(job["state"]).is_terminal:
        # Skipped or merged meanwhile: nothing would ever release the slot.
        return False
    taken = db.execute(
        "UPDATE ai_brokers SET current_workload = current_workload + 1, updated_at = ? "
        "WHERE id = ? AND current_workload < max_concurrent_chats",
        (now, broker_id),
    ).rowcount
    if not taken:
        # The job is alive, waiting for room: keep the reaper from thinking it lost.
        db.execute("UPDATE reply_jobs SET updated_at = ? WHERE id = ?", (now, job_id))
        return False
    db.execute(
        "UPDATE reply_jobs SET capacity_held = 1, broker_id = ?, updated_at = ? WHERE id = ?",
        (broker_id, now, job_id),
    )
    return True


def _set_conversation_status(
    db: sqlite3.Connection,
    conversation_id: int,
    status: ConversationStatus,
    reason: str,
    *,
    now: float,
) -> list[str]:
    known = db.execute(
        "SELECT 1 FROM broker_conversations WHERE conversation_id = ?", (conversation_id,)
    ).fetchone()
    if known is None:
        # A human got there before any broker was assigned: remember it all the same,
        # or the customer's next message would be answered.
        db.execute(
            "INSERT INTO broker_conversations (conversation_id, broker_id, status, "
            "assigned_at, updated_at) VALUES (?, ?, 'bot', ?, ?)",
            (conversation_id, _pick_broker(db, None), now, now),
        )
    if status is ConversationStatus.HANDED_OFF:
        db.execute(
            "UPDATE broker_conversations SET status = ?, handoff_reason = ?, "
            "handoff_at = ?, updated_at = ? WHERE conversation_id = ?",
            (status.value, reason, now, now, conversation_id),
        )
    else:
        # A human taking over after our own handoff keeps the handoff record.
        db.execute(
            "UPDATE broker_conversations SET status = CASE WHEN status = 'bot' "
            "THEN ? ELSE status END, updated_at = ? WHERE conversation_id = ?",
            (status.value, now, conversation_id),
        )
    skipped = [
        row["id"]
        for row in db.execute(
            f"SELECT id FROM reply_jobs WHERE conversation_id = ? "  # noqa: S608
            f"AND state IN ({_marks(_UNSENT)})",
            (conversation_id, *_UNSENT),
        )
    ]
    for job_id in skipped:
        _release(db, job_id, now)
        db.execute(
            "UPDATE reply_jobs SET state = 'skipped', error = ?, finished_at = ?, "
            "updated_at = ? WHERE id = ?",
            (f"conversation {status.value}: {reason}", now, now, job_id),
        )
    return skipped


def _record_delivered_reply(
    db: sqlite3.Connection,
    conversation_id: int,
    broker_id: str,
    *,
    customer_messages: int,
    handoff_reason: str | None,
    now: float,
) -> None:
    db.execute(
        "UPDATE broker_conversations SET message_count = message_count + ?, "
        "last_reply_at = ?, updated_at = ? WHERE conversation_id = ?",
        (customer_messages, now, now, conversation_id),
    )
    db.execute(
        "UPDATE ai_brokers SET messages_handled = messages_handled + ?, "
        "handoffs = handoffs + ?, updated_at = ? WHERE id = ?",
        (customer_messages, 1 if handoff_reason else 0, now, broker_id),
    )


def _record_inbound(
    db: sqlite3.Connection,
    message: InboundMessage,
    *,
    delivery_id: str | None,
    now: float,
    route: Route = Route.NEW,
    route_reason: str | None = None,
    payload: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> InboundOutcome:
    if delivery_id is not None:
        fresh = db.execute(
            "INSERT INTO webhook_deliveries (delivery_id, received_at) VALUES (?, ?) "
            "ON CONFLICT (delivery_id) DO NOTHING",
            (delivery_id, now),
        ).rowcount
        if not fresh:
            return InboundOutcome(InboundStatus.DUPLICATE, "delivery_already_received")
    known = db.execute(
        "SELECT 1 FROM reply_jobs WHERE inbound_message_id = ?", (message.message_id,)
    ).fetchone()
    if known is not None:
        return InboundOutcome(InboundStatus.DUPLICATE, "message_already_received")
    conversation = db.execute(
        "SELECT status FROM broker_conversations WHERE conversation_id = ?",
        (message.conversation_id,),
    ).fetchone()
    if conversation is not None and conversation["status"] != ConversationStatus.BOT:
        return InboundOutcome(InboundStatus.IGNORED, f"conversation_{conversation[0]}")
    db.execute(
        "UPDATE broker_conversations SET last_customer_message_at = ?, updated_at = ? "
        "WHERE conversation_id = ?",
        (now, now, message.conversation_id),
    )
    job_id = _new_job_id()
    state = JobState.FORWARDING if route is Route.N8N else JobState.QUEUED
    db.execute(
        "INSERT INTO reply_jobs (id, kind, conversation_id, state, inbound_message_id, "
        "inbound_content, delivery_id, received_at, updated_at, route, route_reason, "
        "inbound_payload, inbound_headers) VALUES (?, 'reply', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            job_id,
            message.conversation_id,
            state.value,
            message.message_id,
            message.content,
            delivery_id,
            now,
            now,
            route.value,
            route_reason,
            payload,
            None if headers is None else json.dumps(dict(headers)),
        ),
    )
    return InboundOutcome(InboundStatus.RECORDED, "customer_message", _job_by_id(db, job_id))


def _prepare_job(
    db: sqlite3.Connection,
    job_id: str,
    *,
    broker_id: str,
    delay_s: float,
    escalation_reason: str | None,
    now: float,
) -> ReplyJob | None:
    changed = db.execute(
        "UPDATE reply_jobs SET state = 'waiting', broker_id = ?, delay_s = ?, due_at = ?, "
        "escalation_reason = ?, updated_at = ? WHERE id = ? AND state = 'queued'",
        (broker_id, delay_s, now + delay_s, escalation_reason, now, job_id),
    ).rowcount
    return _job_by_id(db, job_id) if changed else None


def _claim_job(
    db: sqlite3.Connection,
    job_id: str,
    *,
    owner: str,
    lease_s: float,
    coalesce_window_s: float,
    now: float,
) -> Claim:
    row = db.execute("SELECT * FROM reply_jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        return Claim(ClaimStatus.NOT_CLAIMABLE, None, reason="unknown_job")
    job = _job(row)
    lease_expired = (
        job.state is JobState.RUNNING
        and job.lease_expires_at is not None
        and job.lease_expires_at <= now
    )
    if job.state is not JobState.WAITING and not lease_expired:
        return Claim(ClaimStatus.NOT_CLAIMABLE, job, reason=f"state_{job.state.value}")
    if job.state is JobState.WAITING and job.due_at is not None and job.due_at > now:
        return Claim(ClaimStatus.NOT_CLAIMABLE, job, reason=NOT_DUE)
    if job.kind is JobKind.REPLY and job.send_started_at is None:
        newer = db.execute(
            f"SELECT id FROM reply_jobs WHERE conversation_id = ? AND kind = 'reply' "  # noqa: S608
            f"AND seq > ? AND state IN ({_marks(_UNSENT)}) ORDER BY seq DESC LIMIT 1",
            (job.conversation_id, job.seq, *_UNSENT),
        ).fetchone()
        if newer is not None and now - job.received_at < coalesce_window_s:
            _merge(db, job.id, newer["id"], now)
            return Claim(ClaimStatus.DEFERRED, _job_by_id(db, job.id), reason="newer_message")
        older = db.execute(
            f"SELECT id FROM reply_jobs WHERE conversation_id = ? AND kind = 'reply' "  # noqa: S608
            f"AND seq < ? AND state IN ({_marks(_UNSENT)})",
            (job.conversation_id, job.seq, *_UNSENT),
        ).fetchall()
        for other in older:
            _merge(db, other["id"], job.id, now)
    db.execute(
        "UPDATE reply_jobs SET state = 'running', lease_owner = ?, lease_expires_at = ?, "
        "attempts = attempts + 1, started_at = COALESCE(started_at, ?), updated_at = ? "
        "WHERE id = ?",
        (owner, now + lease_s, now, now, job.id),
    )
    claimed = _job_by_id(db, job.id)
    merged = [
        _job(r)
        for r in db.execute(
            "SELECT * FROM reply_jobs WHERE merged_into = ? ORDER BY seq", (job.id,)
        )
    ]
    return Claim(ClaimStatus.CLAIMED, claimed, tuple([*merged, claimed]))


def _begin_send(db: sqlite3.Connection, job_id: str, *, owner: str, now: float) -> ReplyJob | None:
    before = db.execute(
        "SELECT * FROM reply_jobs WHERE id = ? AND state = 'running' AND lease_owner = ?",
        (job_id, owner),
    ).fetchone()
    if before is None:
        return None
    db.execute(
        "UPDATE reply_jobs SET send_started_at = COALESCE(send_started_at, ?), "
        "updated_at = ? WHERE id = ?",
        (now, now, job_id),
    )
    return _job(before)


def _finish_job(
    db: sqlite3.Connection,
    job_id: str,
    *,
    owner: str | None,
    state: JobState,
    now: float,
    reply_text: str | None = None,
    reply_message_id: int | None = None,
    used_fallback: bool = False,
    fallback_reason: str | None = None,
    error: str | None = None,
    error_detail: str | None = None,
) -> bool:
    if not state.is_terminal:
        raise ValueError(f"{state} is not a terminal state")
    # Without an owner (an operator cancelling) only unsent jobs can be finished; with one,
    # only the lease holder may finish its job.
    ownership = (
        "state = 'running' AND lease_owner = ?" if owner else "state IN ('queued', 'waiting')"
    )
    changed = db.execute(
        "UPDATE reply_jobs SET state = ?, reply_text = COALESCE(?, reply_text), "  # noqa: S608
        "reply_message_id = COALESCE(?, reply_message_id), used_fallback = ?, "
        "fallback_reason = ?, error = ?, error_detail = ?, finished_at = ?, "
        "lease_owner = NULL, lease_expires_at = NULL, updated_at = ? "
        f"WHERE id = ? AND {ownership}",
        (
            state.value,
            reply_text,
            reply_message_id,
            int(used_fallback),
            fallback_reason,
            error,
            error_detail,
            now,
            now,
            job_id,
            *((owner,) if owner else ()),
        ),
    ).rowcount
    if changed:
        _release(db, job_id, now)
    return bool(changed)


def _acquire_send_slot(db: sqlite3.Connection, rate_per_s: float, *, now: float) -> float:
    width = max(1.0, 1.0 / rate_per_s)
    allowed = max(1, round(rate_per_s * width))
    window_start = now - (now % width)
    row = db.execute(
        "SELECT sends FROM send_windows WHERE window_start = ?", (window_start,)
    ).fetchone()
    if row is not None and row["sends"] >= allowed:
        return max(0.001, window_start + width - now)
    db.execute(
        "INSERT INTO send_windows (window_start, sends) VALUES (?, 1) "
        "ON CONFLICT (window_start) DO UPDATE SET sends = sends + 1",
        (window_start,),
    )
    return 0.0


def _schedule_job(
    db: sqlite3.Connection, job_id: str, *, plan: ReplyPlan, now: float
) -> ReplyJob | None:
    row = db.execute("SELECT * FROM reply_jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None or row["state"] != JobState.QUEUED:
        return None
    conversation_id = row["conversation_id"]
    found = db.execute(
        "SELECT * FROM broker_conversations WHERE conversation_id = ?", (conversation_id,)
    ).fetchone()
    # A customer who wrote without the lead form: the least-loaded broker takes them.
    conversation = (
        _conversation(found)
        if found is not None
        else _assign_broker(db, conversation_id, None, now=now)
    )
    if conversation.status is not ConversationStatus.BOT:
        _finish_job(
            db,
            job_id,
            owner=None,
            state=JobState.SKIPPED,
            now=now,
            error=f"conversation {conversation.status.value}",
        )
        return _job_by_id(db, job_id)
    if not _hold_capacity(db, job_id, conversation.broker_id, now=now):
        return _job_by_id(db, job_id)  # still queued: the broker is full
    return _prepare_job(
        db,
        job_id,
        broker_id=conversation.broker_id,
        delay_s=plan.delay_for(conversation.broker_id),
        escalation_reason=plan.escalation_reason,
        now=now,
    )


def _conversation_status(db: sqlite3.Connection, conversation_id: int) -> ConversationStatus:
    row = db.execute(
        "SELECT status FROM broker_conversations WHERE conversation_id = ?", (conversation_id,)
    ).fetchone()
    return ConversationStatus.BOT if row is None else ConversationStatus(row["status"])


def _add_missing_columns(connection: sqlite3.Connection) -> None:
    for table, columns in _ADDED_COLUMNS.items():
        existing = {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}
        if not existing:
            continue  # a new store: schema.sql creates the table whole
        for name, definition in columns:
            if name not in existing:
                connection.execute(f"ALTER TABLE {table} ADD COLUMN {name} {definition}")


def _marks(values: Iterable[Any]) -> str:
    return ", ".join("?" for _ in values)


def _new_job_id() -> str:
    return uuid.uuid4().hex


def _release(db: sqlite3.Connection, job_id: str, now: float) -> None:
    row = db.execute(
        "SELECT broker_id, capacity_held FROM reply_jobs WHERE id = ?", (job_id,)
    ).fetchone()
    if row is None or not row["capacity_held"]:
        return
    db.execute(
        "UPDATE ai_brokers SET current_workload = MAX(current_workload - 1, 0), updated_at = ? "
        "WHERE id = ?",
        (now, row["broker_id"]),
    )
    db.execute(
        "UPDATE reply_jobs SET capacity_held = 0, updated_at = ? WHERE id = ?", (now, job_id)
    )


def _merge(db: sqlite3.Connection, job_id: str, into: str, now: float) -> None:
    _release(db, job_id, now)
    db.execute(
        "UPDATE reply_jobs SET state = 'merged', merged_into = ?, finished_at = ?, "
        "lease_owner = NULL, lease_expires_at = NULL, updated_at = ? WHERE id = ?",
        (into, now, now, job_id),
    )
    # Messages already merged into this one follow it into the newer job.
    db.execute(
        "UPDATE reply_jobs SET merged_into = ?, updated_at = ? WHERE merged_into = ?",
        (into, now, job_id),
    )


def _pick_broker(db: sqlite3.Connection, preferred_broker_id: str | None) -> str:
    brokers = db.execute(
        "SELECT id, current_workload, max_concurrent_chats FROM ai_brokers WHERE is_active = 1 "
        "ORDER BY rowid"
    ).fetchall()
    if not brokers:
        raise StoreError("no active brokers: run `ai-broker brokers seed`")
    by_id = {row["id"]: row for row in brokers}
    preferred = by_id.get(preferred_broker_id) if preferred_broker_id else None
    if preferred is not None and preferred["current_workload"] < preferred["max_concurrent_chats"]:
        return str(preferred["id"])
    with_room = [row for row in brokers if row["current_workload"] < row["max_concurrent_chats"]]
    if preferred is not None and not with_room:
        return str(preferred["id"])
    candidates = with_room or brokers
    best = min(candidates, key=lambda row: row["current_workload"] / row["max_concurrent_chats"])
    return str(best["id"])


def _job_by_id(db: sqlite3.Connection, job_id: str) -> ReplyJob:
    return _job(db.execute("SELECT * FROM reply_jobs WHERE id = ?", (job_id,)).fetchone())


def _job(row: sqlite3.Row) -> ReplyJob:
    return ReplyJob(
        id=row["id"],
        seq=row["seq"],
        kind=JobKind(row["kind"]),
        conversation_id=row["conversation_id"],
        state=JobState(row["state"]),
        attempts=row["attempts"],
        inbound_message_id=row["inbound_message_id"],
        inbound_content=row["inbound_content"],
        delivery_id=row["delivery_id"],
        broker_id=row["broker_id"],
        capacity_held=bool(row["capacity_held"]),
        merged_into=row["merged_into"],
        lease_owner=row["lease_owner"],
        lease_expires_at=row["lease_expires_at"],
        delay_s=row["delay_s"],
        due_at=row["due_at"],
        escalation_reason=row["escalation_reason"],
        received_at=row["received_at"],
        started_at=row["started_at"],
        send_started_at=row["send_started_at"],
        finished_at=row["finished_at"],
        reply_text=row["reply_text"],
        reply_message_id=row["reply_message_id"],
        used_fallback=bool(row["used_fallback"]),
        fallback_reason=row["fallback_reason"],
        error=row["error"],
        updated_at=row["updated_at"],
        route=row["route"],
        route_reason=row["route_reason"],
        inbound_payload=row["inbound_payload"],
        comparison_id=row["comparison_id"],
        inbound_headers=_headers(row["inbound_headers"]),
    )


def _headers(value: str | None) -> dict[str, str] | None:
    return None if value is None else {str(k): str(v) for k, v in json.loads(value).items()}


def _broker(row: sqlite3.Row) -> Broker:
    return Broker(
        id=row["id"],
        name=row["name"],
        persona_type=row["persona_type"],
        title=row["title"],
        specialty=row["specialty"],
        is_active=bool(row["is_active"]),
        current_workload=row["current_workload"],
        max_concurrent_chats=row["max_concurrent_chats"],
        total_conversations=row["total_conversations"],
        messages_handled=row["messages_handled"],
        handoffs=row["handoffs"],
    )


def _conversation(row: sqlite3.Row) -> BrokerConversation:
    return BrokerConversation(
        conversation_id=row["conversation_id"],
        broker_id=row["broker_id"],
        contact_id=row["contact_id"],
        lead_score=row["lead_score"],
        lead_profile=json.loads(row["lead_profile"]) if row["lead_profile"] else None,
        status=ConversationStatus(row["status"]),
        message_count=row["message_count"],
        handoff_reason=row["handoff_reason"],
        greeting_job_id=row["greeting_job_id"],
        last_customer_message_at=row["last_customer_message_at"],
        last_reply_at=row["last_reply_at"],
        assigned_at=row["assigned_at"],
    )


def _rollout_params(state: RolloutState) -> tuple[Any, ...]:
    return (
        state.percentage,
        int(state.shadow),
        int(state.n8n_enabled),
        int(state.queue_paused),
        guard_to_json(state.guard),
        state.updated_at,
        state.updated_by,
    )


def _rollout(row: sqlite3.Row) -> RolloutState:
    return RolloutState(
        percentage=row["percentage"],
        shadow=bool(row["shadow"]),
        n8n_enabled=bool(row["n8n_enabled"]),
        queue_paused=bool(row["queue_paused"]),
        guard=guard_from_json(row["guard"]),
        updated_at=row["updated_at"],
        updated_by=row["updated_by"],
    )


def _score(db: sqlite3.Connection, comparison_id: int) -> None:
    row = db.execute(
        "SELECT shadow_reply, n8n_reply FROM shadow_comparisons WHERE id = ?", (comparison_id,)
    ).fetchone()
    if row is not None and row["shadow_reply"] is not None and row["n8n_reply"] is not None:
        db.execute(
            "UPDATE shadow_comparisons SET similarity = ? WHERE id = ?",
            (similarity(row["shadow_reply"], row["n8n_reply"]), comparison_id),
        )


def comparison_from_row(row: sqlite3.Row) -> Comparison:
    """A shadow_comparisons row as a Comparison (also used by the console's analytics)."""
    return Comparison(
        id=row["id"],
        conversation_id=row["conversation_id"],
        inbound_message_id=row["inbound_message_id"],
        customer_message=row["customer_message"],
        received_at=row["received_at"],
        broker_id=row["broker_id"],
        shadow_reply=row["shadow_reply"],
        shadow_latency_ms=row["shadow_latency_ms"],
        shadow_used_fallback=None
        if row["shadow_used_fallback"] is None
        else bool(row["shadow_used_fallback"]),
        n8n_reply=row["n8n_reply"],
        n8n_latency_ms=row["n8n_latency_ms"],
        n8n_source=row["n8n_source"],
        similarity=row["similarity"],
        verdict=Verdict(row["verdict"]) if row["verdict"] else None,
        verdict_note=row["verdict_note"],
        verdict_by=row["verdict_by"],
        verdict_at=row["verdict_at"],
    )
