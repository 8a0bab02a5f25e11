"""`ai-broker worker`: a Huey consumer running the reply pipeline, plus its maintenance loop.

The maintenance loop (every 2 s) writes this process's heartbeat and runs the reaper, which
re-enqueues ledger jobs whose Huey task was lost (a killed worker, a failed enqueue), the n8n
watchdog (messages n8n took and never answered go to the new pipeline), and every 5 s the
automatic rollback guard. Huey's own periodic tasks have minute granularity, too coarse
for any of them. With Redis, an intake drainer records the messages receivers buffered
(tasks/intake_drain.py).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

from app.bootstrap import Services, build_notifier, build_services, prepare_store
from app.config import Settings
from app.services.forwarding import N8nWatchdog
from app.services.guard import RolloutGuard
from app.store.models import ReapAction, WorkerHeartbeat
from tasks.intake_drain import IntakeDrainer

log = logging.getLogger(__name__)

MAINTENANCE_INTERVAL_S = 2.0
STALE_AFTER_S = 15.0
PRUNE_EVERY_S = 300.0
GUARD_EVERY_S = 5.0
SAMPLE_EVERY_S = 60.0
SHUTDOWN_TIMEOUT_S = 20.0


class Maintenance:
    def __init__(self, services: Services, *, started_at: float) -> None:
        self._services = services
        self._started_at = started_at
        self._last_prune = 0.0
        self._last_guard = 0.0
        self._guard = RolloutGuard(
            services.store, services.rollout, build_notifier(services.settings)
        )
        self._last_sample = 0.0
        forwarder = services.forwarder
        self._watchdog = (
            None
            if forwarder is None
            else N8nWatchdog(
                services.store,
                services.queue,
                forwarder.breaker,
                build_notifier(services.settings),
                silent_after_s=services.settings.n8n_reply_timeout_s,
            )
        )

    def tick(self, now: float) -> int:
        store = self._services.store
        store.heartbeat(
            WorkerHeartbeat(
                worker_id=self._services.worker_id,
                hostname=socket.gethostname(),
                pid=os.getpid(),
                concurrency=self._services.settings.worker_concurrency,
                started_at=self._started_at,
                seen_at=now,
            )
        )
        reaped = store.reap(now=now, stale_after_s=STALE_AFTER_S)
        for job in reaped:
            at = job.due_at if job.due_at is not None and job.due_at > now else None
            if job.action is ReapAction.PREPARE:
                self._services.queue.enqueue_prepare(job.job_id, at=at)
            else:
                self._services.queue.enqueue_respond(job.job_id, at=at)
        if reaped:
            log.warning("reaper re-enqueued %d job(s) whose task was lost", len(reaped))
        if self._watchdog is not None:
            self._watchdog.check(now)
        if now - self._last_sample >= SAMPLE_EVERY_S:
            # Broker workload over time, for the console's Brokers page.
            self._last_sample = now
            self._services.analytics.sample_brokers(now)
        if now - self._last_guard >= GUARD_EVERY_S:
            self._last_guard = now
            self._guard.check()
        if now - self._last_prune > PRUNE_EVERY_S:
            store.prune(now=now)
            self._last_prune = now
        return len(reaped)

    def run_forever(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.tick(time.time())
            except Exception:
                log.exception("maintenance tick failed")
            stop.wait(MAINTENANCE_INTERVAL_S)


def run_worker(settings: Settings) -> None:
    """Run until SIGINT/SIGTERM. Call with gevent's monkey-patching already applied."""
    settings.require_chatwoot()
    services = build_services(settings, worker=True)
    prepare_store(services.store)
    services.pipeline()  # fail at start, not on the first job, if the LLM is misconfigured
    consumer = services.queue.huey.create_consumer(
        workers=settings.worker_concurrency,
        worker_type="greenlet",
        periodic=False,
        # SIGTERM (what Procfile platforms send) stops taking tasks at once and lets running
        # ones finish; whatever is still running after the timeout is handed back below.
        graceful_signal="TERM",
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        # SqliteHuey polls, and an idle consumer backs off up to max_delay (10 s by default, which
        # once made a 1 s delay a 6 s pick-up); a short ceiling keeps pick-up latency low.
        initial_delay=0.05,
        backoff=1.15,
        max_delay=0.5,
        scheduler_interval=1,
        check_worker_health=True,
    )
    stop = threading.Event()
    maintenance = Maintenance(services, started_at=time.time())
    threading.Thread(
        target=maintenance.run_forever, args=(stop,), name="maintenance", daemon=True
    ).start()
    drainer_thread = None
    if services.intake_buffer is not None:
        drainer = IntakeDrainer(
            services.intake_buffer,
            services.intake.admit_buffered,
            consumer=f"{services.worker_id}:{uuid.uuid4().hex[:6]}",
        )
        drainer_thread = threading.Thread(
            target=drainer.run_until, args=(stop,), name="intake", daemon=True
        )
        drainer_thread.start()
    log.info(
        "worker %s: %d greenlets on %s",
        services.worker_id,
        settings.worker_concurrency,
        "Redis" if settings.redis_url else f"SQLite ({settings.queue_path})",
    )
    try:
        consumer.run()
    finally:
        stop.set()
        if drainer_thread is not None:
            # The drainer finishes the batch it holds (a blocking pop ends within 1 s).
            drainer_thread.join(timeout=SHUTDOWN_TIMEOUT_S)
        _hand_back(services)


def _hand_back(services: Services) -> None:
    """Return this worker's unfinished jobs so another worker takes them at once, instead of
    after their leases expire."""
    try:
        returned = services.store.hand_back(owner_prefix=f"{services.worker_id}:", now=time.time())
        for job_id in returned:
            services.queue.enqueue_respond(job_id)
    except Exception:  # the reaper recovers them when their leases expire
        log.exception("could not hand back running jobs at shutdown")
        return
    if returned:
        log.warning("handed back %d unfinished job(s) at shutdown", len(returned))
