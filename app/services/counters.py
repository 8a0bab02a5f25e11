"""Outcome counters for /metrics, added up in memory and written to the store once a second.

Writing each webhook's outcome on its own would be a second write transaction per webhook,
competing for the store's write lock with the ledger write that matters. A counter lost with a
killed process is at most a second of metrics.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections import Counter

from app.store.base import RuntimeState

log = logging.getLogger(__name__)

FLUSH_EVERY_S = 1.0


class BufferedCounters:
    def __init__(self, store: RuntimeState, *, flush_every_s: float = FLUSH_EVERY_S) -> None:
        self._store = store
        self._flush_every_s = flush_every_s
        self._pending: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._flusher: threading.Thread | None = None
        self._stopped = threading.Event()

    def count(self, name: str, label: str) -> None:
        with self._lock:
            self._pending[(name, label)] += 1
            if self._flusher is None:
                # Started on first use, so a forked receiver process gets its own.
                self._flusher = threading.Thread(
                    target=self._flush_forever, name="counters", daemon=True
                )
                self._flusher.start()
                atexit.register(self.flush)

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, Counter()
        for (name, label), amount in pending.items():
            try:
                self._store.count(name, label, amount)
            except Exception:  # keep the rest; the store may be back next second
                log.exception("could not write counter %s:%s", name, label)
                with self._lock:
                    self._pending[(name, label)] += amount

    def close(self) -> None:
        """Write what is pending and stop flushing, before the store closes."""
        self._stopped.set()
        atexit.unregister(self.flush)
        self.flush()

    def _flush_forever(self) -> None:
        while not self._stopped.wait(self._flush_every_s):
            self.flush()
