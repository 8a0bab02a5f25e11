"""Keeping a job's lease alive while it runs.

A running job's lease tells the reaper its worker is alive. Long steps (the LLM call, a slow
Chatwoot) must not let it lapse, or another worker would take the job over while this one is
still working on it; a background renewal every third of the lease keeps it fresh. If the
worker dies, renewals stop and the lease runs out: that is how the reaper knows.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType

log = logging.getLogger(__name__)


class LeaseKeeper:
    def __init__(self, job_id: str, renew: Callable[[], bool], *, interval_s: float) -> None:
        self._job_id = job_id
        self._renew = renew
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{job_id}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=self._interval_s)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                if not self._renew():
                    # Cancelled, or taken over: the job's next ledger write will find out.
                    log.warning("job=%s lease could not be renewed", self._job_id)
                    return
            except Exception:  # the store is unreachable: try again next interval
                log.exception("job=%s lease renewal failed", self._job_id)
