"""The job queue adapter: Huey (SqliteHuey by default, RedisHuey with REDIS_URL) and our two
tasks, behind the JobQueue port (app/ports.py).

Huey only moves job ids; the ledger holds the job. A task is `prepare(job_id)` (assign, hold
capacity, decide the human-like delay) or `respond(job_id)` (claim, generate, send). Delays are
Huey's scheduled tasks (`eta`), so a waiting reply never occupies a worker.
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
from collections.abc import Callable

import redis
from huey import Huey, RedisHuey, SqliteHuey
from huey.storage import SqliteStorage

from app.config import Settings
from app.ports import IntakeBacklog, JobRunner

log = logging.getLogger(__name__)

QUEUE_NAME = "ai-broker"
# Above Huey's blocking-pop timeout (1 s), so a dead Redis fails calls instead of hanging them.
REDIS_SOCKET_TIMEOUT_S = 5.0


def build_redis_pool(settings: Settings) -> redis.ConnectionPool:
    """The one Redis pool of a process, shared by Huey and the intake buffer."""
    assert settings.redis_url
    # redis-py's pool defaults to 100 connections; every greenlet may hold one.
    return redis.ConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.worker_concurrency + 16,
        socket_timeout=REDIS_SOCKET_TIMEOUT_S,
        health_check_interval=30,
    )


def build_huey(settings: Settings, pool: redis.ConnectionPool | None = None) -> Huey:
    if settings.redis_url:
        pool = pool or build_redis_pool(settings)
        return RedisHuey(QUEUE_NAME, connection_pool=pool, results=False, utc=True)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return EmbeddedHuey(
        QUEUE_NAME, filename=str(settings.queue_path), cache_mb=1, results=False, utc=True
    )


class _QueueFileStorage(SqliteStorage):
    """SqliteHuey's storage with the store's durability: WAL + synchronous=NORMAL.

    Huey leaves SQLite's default FULL, an fsync on every enqueue and dequeue (a fifth of the
    worker's time in profiles). NORMAL survives process crashes; after an OS crash the ledger's
    reaper re-enqueues whatever the queue file lost. A small cache per connection, because the
    gevent worker opens one per greenlet."""

    def _create_connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection = super()._create_connection()
        connection.execute("PRAGMA synchronous=NORMAL")
        return connection


class EmbeddedHuey(SqliteHuey):
    storage_class = _QueueFileStorage


class HueyJobQueue:
    """Registers the pipeline's tasks on a Huey instance and enqueues them."""

    def __init__(
        self,
        huey: Huey,
        runner: Callable[[], JobRunner],
        *,
        intake: IntakeBacklog | None = None,
    ) -> None:
        self.huey = huey
        self._intake = intake

        @huey.task(name="prepare_job")
        def prepare_job(job_id: str) -> None:
            runner().prepare(job_id)

        @huey.task(name="respond_job")
        def respond_job(job_id: str) -> None:
            runner().respond(job_id)

        self._prepare = prepare_job
        self._respond = respond_job

    def enqueue_prepare(self, job_id: str, *, at: float | None = None) -> None:
        self._enqueue(self._prepare, job_id, at)

    def enqueue_respond(self, job_id: str, *, at: float | None = None) -> None:
        self._enqueue(self._respond, job_id, at)

    def depth(self) -> dict[str, int]:
        """Tasks ready and scheduled, and with Redis the intake buffer: messages accepted by a
        receiver that no worker has recorded yet, and entries parked for an operator."""
        depth = {
            "pending": self.huey.pending_count(),
            "scheduled": self.huey.scheduled_count(),
        }
        if self._intake is not None:
            depth["intake"] = self._intake.depth()
            depth["intake_parked"] = self._intake.rejected()
        return depth

    @staticmethod
    def _enqueue(task: Callable[..., object], job_id: str, at: float | None) -> None:
        if at is None:
            task(job_id)
            return
        # An aware datetime: Huey reads a naive eta as local time and drops its microseconds,
        # which made tasks due up to a second early (or hours, outside UTC).
        eta = dt.datetime.fromtimestamp(at, tz=dt.UTC)
        task.schedule(args=(job_id,), eta=eta)  # type: ignore[attr-defined]
