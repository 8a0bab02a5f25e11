"""The worker's side of the Redis intake buffer: claim what receivers accepted, record it in the
ledger (which enqueues the job), and only then drop the claim.

A failure part-way (the store down, Redis gone) keeps the claim: the same entries are taken again
on the next pass, and the ones already recorded come back as ledger duplicates, which is harmless.
A killed worker's claim is returned by any other worker once its liveness key expires. An entry
that fails for any other reason (a bug, not an outage) is parked on the rejected list with its
error logged, so one bad entry cannot hold up every message behind it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

from app.adapters.redis_intake import KEEP_ALIVE_EVERY_S, Claimed, RedisIntake
from app.domain.intake_entry import BufferedInbound
from app.services.intake import IntakeResult
from app.store.base import StoreError

log = logging.getLogger(__name__)

BATCH = 32
BLOCK_S = 1.0
RECOVER_EVERY_S = 5.0
RETRY_AFTER_FAILURE_S = 1.0


class IntakeDrainer:
    def __init__(
        self,
        buffer: RedisIntake,
        admit: Callable[[BufferedInbound], IntakeResult],
        *,
        consumer: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._buffer = buffer
        self._admit = admit
        self._consumer = consumer
        self._clock = clock
        self._last_recovery = float("-inf")
        self._last_alive = float("-inf")
        # After a failed pass the claim still holds entries: finish those before taking more.
        self._holding = False

    def drain_once(self, *, block_s: float = BLOCK_S) -> int:
        """One pass: recover orphaned claims when due, then record one batch. Returns how many
        entries were handled. Raises on a store or Redis failure, keeping the claim."""
        self._keep_alive()
        if self._clock() - self._last_recovery >= RECOVER_EVERY_S:
            self._last_recovery = self._clock()
            self._buffer.recover_orphans()
        if self._holding:
            claimed = self._buffer.held(self._consumer)
        else:
            claimed = self._buffer.claim(self._consumer, limit=BATCH, block_s=block_s)
        self._holding = bool(claimed)
        for item in claimed:
            self._keep_alive()
            self._record(item)
        if claimed:
            self._buffer.release(self._consumer)
        self._holding = False
        return len(claimed)

    def _keep_alive(self) -> None:
        if self._clock() - self._last_alive >= KEEP_ALIVE_EVERY_S:
            self._buffer.keep_alive(self._consumer)
            self._last_alive = self._clock()

    def run_until(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.drain_once()
            except Exception:
                log.exception("intake: could not record buffered messages; retrying")
                stop.wait(RETRY_AFTER_FAILURE_S)
        try:
            self._buffer.retire(self._consumer)
        except Exception:  # the claim is recovered by another worker when its liveness expires
            log.exception("intake: could not give back the claim at shutdown")

    def _record(self, item: Claimed) -> None:
        if item.entry is None:
            log.error("intake: unreadable entry parked for an operator (%s)", item.error)
            self._buffer.reject(self._consumer, item)
            return
        try:
            result = self._admit(item.entry)
        except (StoreError, redis.RedisError):
            raise
        except Exception:
            log.exception(
                "intake: message %s could not be recorded; parked for an operator",
                item.entry.message.message_id,
            )
            self._buffer.reject(self._consumer, item)
            return
        if result.status != "accepted":
            log.info(
                "intake: message %s %s (%s)",
                item.entry.message.message_id,
                result.status,
                result.reason,
            )
