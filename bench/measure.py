"""Instruments for the pipeline benchmark: reply timestamps, percentiles, process memory and CPU.

`ReplyClockSandbox` is the Chatwoot sandbox with one hook: it notes the creation time
(`time.time()`, the same wall clock the ledger uses) of every customer message and every broker
reply, so end-to-end latency is read from the sandbox's own records instead of by polling, and a
run can wait for "every conversation answered" without loading the process that serves the
sandboxes.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.domain.events import JOB_MARKER_KEY
from app.sandbox.chatwoot import INCOMING, OUTGOING, ChatwootSandbox, Conversation, Message

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


class ReplyClockSandbox(ChatwootSandbox):
    """The Chatwoot sandbox, timing customer messages and broker replies as they are created."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._clock = threading.Condition()
        self._customer_at: dict[int, list[float]] = defaultdict(list)
        self._reply_at: dict[int, list[float]] = defaultdict(list)

    def _add_message(self, conversation: Conversation, **fields: Any) -> Message:
        message = super()._add_message(conversation, **fields)
        is_reply = (
            message.message_type == OUTGOING
            and not message.private
            and JOB_MARKER_KEY in message.content_attributes
        )
        if message.message_type == INCOMING or is_reply:
            with self._clock:
                times = self._reply_at if is_reply else self._customer_at
                times[conversation.display_id].append(message.created_at)
                self._clock.notify_all()
        return message

    def customer_times(self) -> dict[int, list[float]]:
        with self._clock:
            return {cid: list(times) for cid, times in self._customer_at.items()}

    def reply_times(self) -> dict[int, list[float]]:
        with self._clock:
            return {cid: list(times) for cid, times in self._reply_at.items()}

    def wait_answered(self, conversation_ids: Iterable[int], timeout_s: float) -> bool:
        """Block until each conversation has at least one broker reply (False on timeout)."""
        waiting = set(conversation_ids)
        deadline = time.monotonic() + timeout_s
        with self._clock:
            while True:
                waiting = {cid for cid in waiting if not self._reply_at.get(cid)}
                remaining = deadline - time.monotonic()
                if not waiting or remaining <= 0:
                    return not waiting
                self._clock.wait(min(remaining, 1.0))


# -- statistics ------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: Sequence[float], scale: float = 1.0) -> dict[str, float]:
    """n, p50, p90, p99 and max of `values`, each multiplied by `scale` (1000: s -> ms)."""
    return {
        "n": len(values),
        "p50": percentile(values, 50) * scale,
        "p90": percentile(values, 90) * scale,
        "p99": percentile(values, 99) * scale,
        "max": (max(values) if values else math.nan) * scale,
    }


# -- processes -------------------------------------------------------------------------------------


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process (VmRSS) in MB, or None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return None
    return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (0 once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def children_of(pid: int) -> list[int]:
    """Direct children of a process (gunicorn's workers under its arbiter)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
            found.append(int(entry.name))
    return found


@dataclass
class ProcessGroup:
    """A role (worker, receiver) and the processes it runs as: a root and its children."""

    name: str
    root: int
    with_children: bool = False
    pids: list[int] = field(default_factory=list)

    def refresh(self) -> None:
        self.pids = [self.root, *(children_of(self.root) if self.with_children else [])]

    def rss_mb(self) -> float:
        return sum(rss or 0.0 for rss in map(rss_mb, self.pids))

    def cpu_seconds(self) -> float:
        return sum(map(cpu_seconds, self.pids))


class ResourceSampler:
    """Samples each group's total RSS every `interval_s` in a thread; keeps the peak and CPU used.

    Used as a context manager around the measured phase.
    """

    def __init__(self, groups: Sequence[ProcessGroup], interval_s: float = 0.2) -> None:
        self.groups = list(groups)
        self.interval_s = interval_s
        self.peak_mb: dict[str, float] = {g.name: 0.0 for g in self.groups}
        self.samples = 0
        self._cpu_start: dict[str, float] = {}
        self.cpu_s: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._started = 0.0
        self.wall_s = 0.0

    def __enter__(self) -> ResourceSampler:
        for group in self.groups:
            group.refresh()
            self._cpu_start[group.name] = group.cpu_seconds()
        self._cpu_start["bench (sandboxes, load)"] = cpu_seconds(os.getpid())
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.wall_s = time.monotonic() - self._started
        for group in self.groups:
            self.cpu_s[group.name] = group.cpu_seconds() - self._cpu_start[group.name]
        bench = "bench (sandboxes, load)"
        self.cpu_s[bench] = cpu_seconds(os.getpid()) - self._cpu_start[bench]

    def _run(self) -> None:
        refresh_every = max(1, round(2.0 / self.interval_s))
        while not self._stop.is_set():
            if self.samples % refresh_every == 0:
                for group in self.groups:
                    group.refresh()
            for group in self.groups:
                self.peak_mb[group.name] = max(self.peak_mb[group.name], group.rss_mb())
            self.samples += 1
            self._stop.wait(self.interval_s)
