"""The reply pipeline's core with hand-written fakes: no processes, no sockets, a clock the test
moves. The store is the real embedded one (a SQLite file), because the ledger's rules (claims,
leases, send stamps, merges) are what the pipeline leans on; Chatwoot, the LLM, n8n and the
queue are fakes that record what they were asked to do.

Each test plays webhooks through the real intake and runs the queue's due tasks the way a
worker would, then checks what the customer saw in Chatwoot and what the ledger says."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from app.bootstrap import prepare_store
from app.domain.chatwoot import ChatMessage, MessageKind, RemoteConversation
from app.domain.events import JOB_MARKER_KEY
from app.domain.jobs import MAX_ATTEMPTS, JobState
from app.domain.personas import failure_apology, persona_by_slug
from app.domain.reply_plan import ReplyPlanner
from app.domain.rollout import RolloutChange, RolloutState
from app.ports.chatwoot import ChatwootUnavailable
from app.ports.replies import GeneratedReply
from app.services.counters import BufferedCounters
from app.services.forwarding import Handover
from app.services.intake import WebhookIntake
from app.services.pipeline import PipelineSettings, ReplyPipeline
from app.services.rollout import RolloutService
from app.store.models import ConversationStatus
from app.store.sqlite import SqliteStore
from tests.support.fixtures import chatwoot_fixture

START = 1_800_000_000.0
CONVERSATION = 318
STALE_AFTER_S = 15.0  # the worker's reaper threshold (tasks/worker.py)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Queue:
    """Huey as the pipeline sees it: tasks with a due time, run when the clock reaches it."""

    clock: Clock
    tasks: list[tuple[float, str, str]] = field(default_factory=list)

    def enqueue_prepare(self, job_id: str, *, at: float | None = None) -> None:
        self.tasks.append((at or self.clock.now, "prepare", job_id))

    def enqueue_respond(self, job_id: str, *, at: float | None = None) -> None:
        self.tasks.append((at or self.clock.now, "respond", job_id))

    def pop_next(self) -> tuple[float, str, str] | None:
        if not self.tasks:
            return None
        self.tasks.sort()
        return self.tasks.pop(0)


class WorkerCrashed(BaseException):
    """The process died: nothing in the pipeline catches it, as nothing survives a SIGKILL."""


class Chatwoot:
    """The Chatwoot port as the pipeline uses it: one conversation and its messages."""

    def __init__(self) -> None:
        self.status = "pending"
        self.assignee_type: str | None = None
        self.custom_attributes: dict[str, Any] = {}
        self.messages: list[ChatMessage] = []
        self.statuses: list[str] = []
        # What goes wrong with the next posts, in order: an exception raised instead of posting,
        # or ("after", exc): posted, then the answer is lost.
        self.send_failures: list[Any] = []
        self._ids = itertools.count(5000)

    def get_conversation(self, conversation_id: int) -> RemoteConversation:
        assert conversation_id == CONVERSATION
        return RemoteConversation(
            id=CONVERSATION,
            inbox_id=1,
            status=self.status,
            assignee_type=self.assignee_type,
            custom_attributes=dict(self.custom_attributes),
            contact_name="Tan Wei Ming",
        )

    def list_messages(self, conversation_id: int) -> list[ChatMessage]:
        return list(self.messages)

    def find_message_with_marker(
        self, conversation_id: int, key: str, value: str
    ) -> ChatMessage | None:
        found = [m for m in self.messages if m.content_attributes.get(key) == value]
        return found[-1] if found else None

    def send_message(
        self,
        conversation_id: int,
        content: str,
        *,
        private: bool = False,
        content_attributes: Mapping[str, Any] | None = None,
    ) -> ChatMessage:
        failure = self.send_failures.pop(0) if self.send_failures else None
        if isinstance(failure, BaseException):
            raise failure
        message = ChatMessage(
            id=next(self._ids),
            kind=MessageKind.OUTGOING,
            content=content,
            private=private,
            content_attributes=dict(content_attributes or {}),
        )
        self.messages.append(message)
        if failure is not None:
            raise failure[1]
        return message

    def merge_custom_attributes(self, conversation_id: int, changes: Mapping[str, Any]) -> None:
        self.custom_attributes.update(changes)

    def toggle_status(self, conversation_id: int, status: str) -> None:
        self.statuses.append(status)
        self.status = status

    def public_replies(self) -> list[str | None]:
        return [m.content for m in self.messages if not m.private]


class Generator:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def generate(
        self,
        *,
        system_prompt: str,
        history: Sequence[Any],
        customer_messages: Sequence[str],
        fallback_text: str,
    ) -> GeneratedReply:
        self.calls.append(list(customer_messages))
        return GeneratedReply(
            text=f"reply {len(self.calls)}",
            used_fallback=False,
            fallback_reason=None,
            latency_ms=5.0,
            model="fake",
        )


class Breaker:
    def admit(self) -> bool:
        return True


class N8n:
    """The legacy workflow, always taking what it is given."""

    def __init__(self) -> None:
        self.breaker = Breaker()
        self.forwarded: list[bytes] = []

    def forward_admitted(self, body: bytes, headers: Mapping[str, str]) -> Handover:
        self.forwarded.append(body)
        return Handover(True, "forwarded")


@dataclass
class System:
    clock: Clock
    store: SqliteStore
    queue: Queue
    chatwoot: Chatwoot
    generator: Generator
    n8n: N8n
    intake: WebhookIntake
    rollout: RolloutService
    _message_ids: Iterator[int] = field(default_factory=lambda: itertools.count(90_000))

    def pipeline(self, worker: str = "worker-1") -> ReplyPipeline:
        return ReplyPipeline(
            store=self.store,
            chatwoot=self.chatwoot,
            generator=self.generator,
            queue=self.queue,
            rollout=self.rollout,
            settings=PipelineSettings(response_delay_scale=1.0, send_rate_per_s=100.0),
            worker_id=worker,
            clock=self.clock,
            sleep=self.clock.sleep,
        )

    def customer_says(self, text: str) -> str:
        payload = chatwoot_fixture("message_created.incoming_contact.json")
        payload["id"] = next(self._message_ids)
        payload["content"] = text
        result = self.intake.accept(payload, raw=b"{}", headers={}, delivery_id=None)
        assert result.job_id is not None, result
        return result.job_id

    def run_queue(self, pipeline: ReplyPipeline | None = None, *, limit: int = 50) -> None:
        """Run tasks as a worker would, moving the clock to each one's due time."""
        pipeline = pipeline or self.pipeline()
        for _ in range(limit):
            task = self.queue.pop_next()
            if task is None:
                return
            at, action, job_id = task
            self.clock.now = max(self.clock.now, at)
            (pipeline.prepare if action == "prepare" else pipeline.respond)(job_id)
        raise AssertionError(f"the queue did not drain in {limit} tasks: {self.queue.tasks}")


@pytest.fixture
def system(tmp_path: Path) -> Iterator[System]:
    clock = Clock()
    store = SqliteStore(tmp_path / "store.db")
    prepare_store(store)
    queue = Queue(clock)
    n8n = N8n()
    rollout = RolloutService(
        store,
        initial=RolloutState(percentage=100, shadow=True),
        forwarder=n8n,  # type: ignore[arg-type]
        queue=queue,
        clock=clock,
    )
    intake = WebhookIntake(
        store,
        queue,
        rollout,
        n8n,  # type: ignore[arg-type]
        BufferedCounters(store),
        planner=ReplyPlanner(scale=1.0),
        clock=clock,
    )
    yield System(clock, store, queue, Chatwoot(), Generator(), n8n, intake, rollout)
    store.close()


def test_a_customer_message_gets_one_reply_after_its_human_like_delay(system: System) -> None:
    job_id = system.customer_says("What rates can I get for an HDB refinance?")
    [(due_at, action, _)] = system.queue.tasks
    assert action == "respond" and due_at > START  # scheduled, not slept
    system.run_queue()
    assert system.chatwoot.public_replies() == ["reply 1"]
    job = system.store.get_job(job_id)
    assert job is not None and job.state is JobState.SENT
    assert system.chatwoot.messages[0].content_attributes == {JOB_MARKER_KEY: job_id}


def test_a_failed_send_is_retried_with_backoff_and_answered_once(system: System) -> None:
    job_id = system.customer_says("Is 2.6% still a good rate?")
    system.chatwoot.send_failures = [ChatwootUnavailable("502"), ChatwootUnavailable("502")]
    pipeline = system.pipeline()
    retries: list[float] = []
    while (task := system.queue.pop_next()) is not None:
        at, _, queued = task
        if retries or system.store.get_job(queued).attempts:  # type: ignore[union-attr]
            retries.append(at - system.clock.now)
        system.clock.now = max(system.clock.now, at)
        pipeline.respond(queued)
    assert retries == [2.0, 4.0]  # the backoff after the first and the second attempt
    assert system.chatwoot.public_replies() == ["reply 3"]
    job = system.store.get_job(job_id)
    assert job is not None and (job.state, job.attempts) == (JobState.SENT, 3)


def test_after_the_last_attempt_the_customer_gets_an_apology_and_a_human(
    system: System,
) -> None:
    job_id = system.customer_says("Can I refinance?")
    system.chatwoot.send_failures = [ChatwootUnavailable("503")] * MAX_ATTEMPTS
    system.run_queue()
    job = system.store.get_job(job_id)
    assert job is not None and job.state is JobState.FAILED
    persona = persona_by_slug(job.broker_id or "")
    assert system.chatwoot.public_replies() == [failure_apology(persona)]
    [note] = [m for m in system.chatwoot.messages if m.private]
    assert "Human specialist requested: ai failure" in (note.content or "")
    assert system.chatwoot.statuses == ["open"]
    assert system.chatwoot.custom_attributes["broker_status"] == "handoff_requested"


def test_a_post_whose_answer_was_lost_is_not_posted_again(system: System) -> None:
    job_id = system.customer_says("What about fixed rates?")
    system.chatwoot.send_failures = [("after", ChatwootUnavailable("read timeout"))]
    system.run_queue()
    assert system.chatwoot.public_replies() == ["reply 1"]  # found by its marker on the retry
    job = system.store.get_job(job_id)
    assert job is not None and job.state is JobState.SENT
    assert job.reply_message_id == system.chatwoot.messages[0].id


def test_a_worker_that_dies_between_the_post_and_the_finish_causes_no_second_post(
    system: System,
) -> None:
    job_id = system.customer_says("How long does a refinance take?")
    system.chatwoot.send_failures = [("after", WorkerCrashed())]
    with pytest.raises(WorkerCrashed):
        system.run_queue(system.pipeline("worker-1"))
    running = system.store.get_job(job_id)
    assert running is not None and running.state is JobState.RUNNING
    # The lease runs out; the reaper (as the worker's maintenance loop runs it) hands the job on.
    system.clock.now += 60
    reaped = system.store.reap(now=system.clock.now, stale_after_s=STALE_AFTER_S)
    assert [r.job_id for r in reaped] == [job_id]
    system.queue.enqueue_respond(job_id)
    system.run_queue(system.pipeline("worker-2"))
    assert system.chatwoot.public_replies() == ["reply 1"]
    job = system.store.get_job(job_id)
    assert job is not None and job.state is JobState.SENT


def test_a_burst_of_messages_gets_one_reply_to_all_of_them(system: System) -> None:
    texts = ["Hi", "I have an HDB loan at 2.6%", "Can I refinance to a bank loan?"]
    job_ids = []
    for text in texts:
        job_ids.append(system.customer_says(text))
        system.clock.now += 0.5
    system.run_queue()
    assert system.chatwoot.public_replies() == ["reply 1"]
    assert system.generator.calls == [texts]
    states = [system.store.get_job(j).state for j in job_ids]  # type: ignore[union-attr]
    assert states == [JobState.MERGED, JobState.MERGED, JobState.SENT]


def test_a_human_who_takes_the_conversation_first_gets_it_alone(system: System) -> None:
    job_id = system.customer_says("Can I speak to someone about my loan?")
    system.chatwoot.assignee_type = "User"  # an agent assigned themself
    system.run_queue()
    assert system.chatwoot.messages == []
    assert system.generator.calls == []
    job = system.store.get_job(job_id)
    assert job is not None and job.state is JobState.SKIPPED
    conversation = system.store.get_conversation(CONVERSATION)
    assert conversation is not None and conversation.status is ConversationStatus.HUMAN


def test_a_shadow_reply_is_recorded_and_never_sent(system: System) -> None:
    system.rollout.change(RolloutChange(percentage=0), actor="test", reason="shadow only")
    system.clock.now += 2  # past the rollout cache
    system.customer_says("What are the current SORA rates?")
    assert len(system.n8n.forwarded) == 1  # n8n answers this conversation
    system.run_queue()
    assert system.chatwoot.messages == []
    [comparison] = system.store.list_comparisons(conversation_id=CONVERSATION)
    assert comparison.shadow_reply == "reply 1"
    assert comparison.customer_message == "What are the current SORA rates?"
