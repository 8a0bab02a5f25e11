"""The ports the services use to reach what runs elsewhere, implemented by the adapters: the
queue here, Chatwoot (chatwoot.py), the reply generator (replies.py), the legacy n8n workflow
(n8n.py) and the intake buffer (intake_buffer.py). The store's port is app/store/base.py.
"""

from __future__ import annotations

from typing import Protocol


class JobQueue(Protocol):
    """Where the receiver and the pipeline hand job ids to the workers."""

    def enqueue_prepare(self, job_id: str, *, at: float | None = None) -> None: ...
    def enqueue_respond(self, job_id: str, *, at: float | None = None) -> None: ...


class IntakeBacklog(Protocol):
    """The intake buffer's counts (app/adapters/redis_intake.py)."""

    def depth(self) -> int: ...
    def rejected(self) -> int: ...


class JobRunner(Protocol):
    """What a worker does with a job id (the reply pipeline)."""

    def prepare(self, job_id: str) -> None: ...
    def respond(self, job_id: str) -> None: ...
