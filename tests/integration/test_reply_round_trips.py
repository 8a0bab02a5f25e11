"""A reply costs four store calls: admit, claim, start_send, complete (issue: four round trips).

The receiver's intake and the worker's pipeline run in this process against a real store (each
backend of the contract suite), the Chatwoot sandbox and the LLM sandbox; a proxy counts the
store calls, and on PostgreSQL a second proxy counts the calls that reach the database
(`Rpc.call`: one function call, one round trip, one transaction). The rollout is read once
before counting: it is cached for a second per process, not read per message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pytest

from app.adapters.chatwoot_gateway import ChatwootGateway
from app.bootstrap import build_chatwoot, build_generator
from app.config import Settings
from app.domain.jobs import JobState
from app.domain.reply_plan import ReplyPlanner
from app.domain.rollout import RolloutState
from app.sandbox.chatwoot import ChatwootSandbox
from app.sandbox.llm import LLMSandbox
from app.services.counters import BufferedCounters
from app.services.intake import WebhookIntake
from app.services.pipeline import PipelineSettings, ReplyPipeline
from app.services.rollout import RolloutService
from app.store.base import Store
from app.store.postgres import PostgresStore
from tests.integration import test_store_contract as contract
from tests.integration.test_migration_control import customer_message

store = contract.store


class Log:
    def __init__(self) -> None:
        self.entries: list[str] = []

    def store_calls(self) -> list[str]:
        return [e.removeprefix("store.") for e in self.entries if e.startswith("store.")]

    def store_calls_before(self, entry: str) -> int:
        return sum(1 for e in self.entries[: self.entries.index(entry)] if e.startswith("store."))


class CountingStore:
    """Every Store method call, in order (a store method is one transaction)."""

    def __init__(self, inner: Store, log: Log) -> None:
        self._inner = inner
        self._log = log

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._inner, name)
        if not callable(found):
            return found

        def counted(*args: Any, **kwargs: Any) -> Any:
            self._log.entries.append(f"store.{name}")
            return found(*args, **kwargs)

        return counted


class CountingRpc:
    def __init__(self, inner: Any, log: Log) -> None:
        self._inner = inner
        self._log = log

    def call(self, function: str, params: Mapping[str, object]) -> Any:
        self._log.entries.append(f"rpc.{function}")
        return self._inner.call(function, params)

    def close(self) -> None:
        self._inner.close()

    def describe(self) -> str:
        return str(self._inner.describe())


class RecordingChatwoot:
    """The real client; its posts are written into the log, to place them among store calls."""

    def __init__(self, inner: ChatwootGateway, log: Log) -> None:
        self._inner = inner
        self._log = log

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def send_message(self, conversation_id: int, content: str, **options: Any) -> Any:
        self._log.entries.append("chatwoot.post" + (".private" if options.get("private") else ""))
        return self._inner.send_message(conversation_id, content, **options)


class InlineQueue:
    def __init__(self) -> None:
        self.respond: list[str] = []
        self.prepare: list[str] = []

    def enqueue_prepare(self, job_id: str, *, at: float | None = None) -> None:
        self.prepare.append(job_id)

    def enqueue_respond(self, job_id: str, *, at: float | None = None) -> None:
        self.respond.append(job_id)


@pytest.fixture
def sandboxes() -> Iterator[tuple[ChatwootSandbox, LLMSandbox]]:
    with ChatwootSandbox() as chatwoot, LLMSandbox() as llm:
        yield chatwoot, llm


@contextmanager
def system(
    store: Store, sandboxes: tuple[ChatwootSandbox, LLMSandbox]
) -> Iterator[tuple[Log, WebhookIntake, ReplyPipeline, InlineQueue, Callable[[], None]]]:
    chatwoot, llm = sandboxes
    log = Log()
    # Webhook counters are written once a second for all webhooks, not per reply: off the count.
    counters = BufferedCounters(store, flush_every_s=3600)
    if isinstance(store, PostgresStore):
        store = PostgresStore(CountingRpc(store.transport, log))
    contract.seed(store)
    counted: Any = CountingStore(store, log)
    settings = Settings(
        chatwoot_base_url=chatwoot.url,
        chatwoot_account_id=chatwoot.account_id,
        chatwoot_inbox_id=chatwoot.inbox_id,
        chatwoot_api_token="sandbox-user-token",
        chatwoot_bot_token="sandbox-bot-token",
        openai_api_key="sandbox-key",
        openai_base_url=f"{llm.url}/v1",
        llm_timeout_s=5.0,
    )
    client = build_chatwoot(settings)
    assert client is not None
    queue = InlineQueue()
    rollout = RolloutService(counted, initial=RolloutState(), forwarder=None, queue=queue)
    intake = WebhookIntake(
        counted,
        queue,
        rollout,
        None,
        counters,
        planner=ReplyPlanner(scale=0.0),
    )
    pipeline = ReplyPipeline(
        store=counted,
        chatwoot=RecordingChatwoot(ChatwootGateway(client), log),  # type: ignore[arg-type]
        generator=build_generator(settings),
        queue=queue,
        rollout=rollout,
        settings=PipelineSettings(response_delay_scale=0.0),
        worker_id="host:1:abc",
    )

    def warm() -> None:
        rollout.current()
        log.entries.clear()

    try:
        yield log, intake, pipeline, queue, warm
    finally:
        counters.close()


def answer(
    chatwoot: ChatwootSandbox,
    intake: WebhookIntake,
    pipeline: ReplyPipeline,
    queue: InlineQueue,
    conversation_id: int,
    content: str,
) -> str:
    chatwoot.customer_message(conversation_id, content)  # in Chatwoot's history
    payload = customer_message(conversation_id, content)  # the webhook that announces it
    result = intake.accept(payload, raw=b"{}", headers={}, delivery_id=None)
    assert result.status == "accepted" and result.job_id is not None
    assert queue.respond == [result.job_id] and queue.prepare == []
    queue.respond.clear()
    pipeline.respond(result.job_id)
    return result.job_id


def test_a_first_message_a_steady_reply_and_a_handoff_take_four_store_calls_each(
    store: Store, sandboxes: tuple[ChatwootSandbox, LLMSandbox]
) -> None:
    chatwoot, _ = sandboxes
    with system(store, sandboxes) as (log, intake, pipeline, queue, warm):
        _, conversation = chatwoot.create_lead_conversation(
            "Tan Wei Ming", "t@example.com", "+6591"
        )
        cid = int(conversation["id"])
        four = ["admit_inbound", "claim_job", "start_send", "complete_job"]

        warm()
        first = answer(chatwoot, intake, pipeline, queue, cid, "What rates can I get?")
        assert log.store_calls() == four  # the broker is assigned inside admit_inbound
        assert log.store_calls_before("chatwoot.post") == 3

        warm()
        steady = answer(chatwoot, intake, pipeline, queue, cid, "And for a 25-year loan?")
        assert log.store_calls() == four
        assert log.store_calls_before("chatwoot.post") == 3

        warm()
        handoff = answer(chatwoot, intake, pipeline, queue, cid, "I want to talk to a real person")
        assert log.store_calls() == four
        assert log.store_calls_before("chatwoot.post") == 3
        assert "chatwoot.post.private" in log.entries  # the handoff note, with no store call

        if any(e.startswith("rpc.") for e in log.entries):
            # PostgreSQL: each store call is exactly one database call, the lease ones on the
            # database's clock.
            assert [e for e in log.entries if e.startswith("rpc.")] == [
                "rpc.admit_inbound",
                "rpc.claim_reply_on_db_clock",
                "rpc.start_send_on_db_clock",
                "rpc.complete_job",
            ]
        states = [store.get_job(job_id) for job_id in (first, steady, handoff)]
        assert [s.state if s else None for s in states] == [
            JobState.SENT,
            JobState.SENT,
            JobState.HANDED_OFF,
        ]
        conversation_row = store.get_conversation(cid)
        assert conversation_row is not None and conversation_row.status.value == "handed_off"
        replies = [
            m
            for m in chatwoot.messages(cid)
            if m["message_type"] in (1, "outgoing") and not m.get("private")
        ]
        assert len(replies) == 3
