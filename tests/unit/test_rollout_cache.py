"""RolloutService's cache: one thread re-reads an expired state while the others go on."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import pytest

from app.domain.rollout import RolloutState
from app.services.rollout import CACHE_TTL_S, STALE_WHILE_READING_S, RolloutService
from app.store.base import Store, StoreError


class SlowRolloutStore:
    """The store's rollout read, slow as a remote call under load, and countable."""

    def __init__(self) -> None:
        self.percentage = 10
        self.reads = 0
        self.down = False
        self.release = threading.Event()
        self.release.set()
        self._lock = threading.Lock()

    def get_rollout(self, *, initial: RolloutState) -> RolloutState:
        with self._lock:
            self.reads += 1
        self.release.wait(timeout=5)
        if self.down:
            raise StoreError("store read failed")
        return RolloutState(percentage=self.percentage)


def service(store: SlowRolloutStore) -> RolloutService:
    return RolloutService(
        cast(Store, store), initial=RolloutState(), forwarder=None, queue=cast(Any, None)
    )


def test_one_thread_reads_an_expired_state_while_the_others_use_the_old_one() -> None:
    store = SlowRolloutStore()
    rollout = service(store)
    assert rollout.current().percentage == 10
    time.sleep(CACHE_TTL_S + 0.05)
    store.percentage = 20
    store.release.clear()  # the next read hangs until released

    with ThreadPoolExecutor(max_workers=8) as pool:
        reader = pool.submit(rollout.current)
        time.sleep(0.1)  # the reader is inside the store call now
        others = [pool.submit(rollout.current) for _ in range(7)]
        answered = [f.result(timeout=1).percentage for f in others]
        assert not reader.done()
        store.release.set()
        assert reader.result(timeout=5).percentage == 20

    assert answered == [10] * 7
    assert store.reads == 2  # the first read and the one re-read
    assert rollout.current().percentage == 20


def test_past_the_stale_limit_every_caller_reads_and_an_outage_fails_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = SlowRolloutStore()
    rollout = service(store)
    rollout.current()
    later = time.monotonic() + STALE_WHILE_READING_S + 1
    monkeypatch.setattr("app.services.rollout.time.monotonic", lambda: later)
    store.down = True

    with pytest.raises(StoreError):
        rollout.current()
    with pytest.raises(StoreError):
        rollout.current()
    assert store.reads == 3
