"""Nothing lost, nothing twice: two receivers and two consumers on Redis and one store, while a
consumer is SIGKILLed three times mid-job, Chatwoot fails 10 % of calls with 500 and 5 % with
timeouts (and sometimes loses the answer to a request it served), the LLM answers 10 % with 429,
and Redis (append-only) restarts once. Every customer message must end with exactly one reply or
one handoff message."""

from __future__ import annotations

import collections
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.sandbox.chatwoot import ChatwootSandbox
from app.sandbox.llm import LLMSandbox
from tests.support.redis_server import RedisServer
from tests.support.system import WEBHOOK_SECRET, RunningSystem, free_port, system_env, wait_until

# Most of its minutes are retry back-off (up to 60 s per attempt) with the machine idle, so it runs
# beside the tests that start no system instead of alone (Makefile, test).
pytestmark = [pytest.mark.e2e, pytest.mark.long_wait]

MESSAGES = 300


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[RunningSystem, RedisServer, int]]:
    redis_server = RedisServer(tmp_path / "redis")
    redis_server.start()
    port_a, port_b = free_port(), free_port()
    with ChatwootSandbox(webhook_retry_wait_s=0.5) as chatwoot, LLMSandbox() as llm:
        # Both receivers get every event (an agent bot and an account webhook), so the
        # dedupe must hold across processes.
        chatwoot.add_webhook(
            f"http://127.0.0.1:{port_a}/webhooks/chatwoot", secret=WEBHOOK_SECRET, kind="agent_bot"
        )
        chatwoot.add_webhook(
            f"http://127.0.0.1:{port_b}/webhooks/chatwoot", secret=WEBHOOK_SECRET, kind="account"
        )
        env = system_env(
            tmp_path / "data",
            port_a,
            chatwoot,
            llm,
            REDIS_URL=redis_server.url,
            WEB_CONCURRENCY="1",
            WORKER_CONCURRENCY="24",
            RESPONSE_DELAY_SCALE="0.3",
            QUEUE_RATE_LIMIT="200",
            CHATWOOT_TIMEOUT_S="1.5",
            LLM_TIMEOUT_S="3",
            JOB_LEASE_S="8",
        )
        (tmp_path / "data").mkdir()
        system = RunningSystem(
            data_dir=tmp_path / "data", port=port_a, chatwoot=chatwoot, llm=llm, env=env
        )
        system.start("web")
        system.start_as("web-b", "web", PORT=str(port_b))
        system.start("worker")
        system.start_as("worker-b", "worker")
        try:
            system.wait_ready()
            yield system, redis_server, port_b
        finally:
            system.stop_all()
            redis_server.stop()


def _running_jobs(system: RunningSystem) -> int:
    store = system.store()
    try:
        return store.job_state_counts().get("running", 0)
    finally:
        store.close()


def test_every_message_gets_exactly_one_answer_through_crashes_and_faults(
    cluster: tuple[RunningSystem, RedisServer, int],
) -> None:
    system, redis_server, _ = cluster
    system.llm.configure(latency_ms=300)
    system.llm.faults.set(rate_limit_rate=0.10, seed=11)
    system.chatwoot.faults.set(
        error_rate=0.10, error_status=500, timeout_rate=0.05, hang_s=3.0, seed=5
    )
    conversations = [system.new_conversation() for _ in range(MESSAGES)]
    events: list[str] = []

    def chaos() -> None:
        for round_ in range(3):
            time.sleep(3.0)
            wait_until(
                lambda: _running_jobs(system) > 0,
                timeout=20,
                interval=0.05,
                what="a job in flight to kill",
            )
            victim = system.processes.pop("worker")
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            events.append(f"SIGKILL worker mid-job (round {round_ + 1})")
            system.start("worker")
            if round_ == 1:
                redis_server.restart()
                events.append("Redis restarted (append-only file kept)")

    chaos_thread = threading.Thread(target=chaos, daemon=True)
    chaos_thread.start()
    for conversation_id in conversations:
        system.chatwoot.customer_message(conversation_id, "Can I refinance my HDB flat this year?")
        time.sleep(0.04)
    chaos_thread.join(timeout=90)
    assert len(events) == 4, events

    def answers(conversation_id: int) -> int:
        return len(system.broker_messages(conversation_id))

    wait_until(
        lambda: all(answers(c) >= 1 for c in conversations),
        timeout=240,
        interval=1.0,
        what="an answer for every customer message",
    )
    system.chatwoot.faults.reset()
    system.llm.faults.reset()
    system.settle(2.0)

    def ledger_settled() -> bool:
        store = system.store()
        try:
            counts = store.job_state_counts()
        finally:
            store.close()
        return not any(counts.get(state) for state in ("queued", "waiting", "running"))

    # Jobs that sent just before a crash finish when re-run (they find their reply and stop).
    wait_until(ledger_settled, timeout=90, interval=1.0, what="every ledger job finished")
    per_conversation = collections.Counter(answers(c) for c in conversations)
    markers = collections.Counter(
        m["content_attributes"]["broker_job_id"]
        for c in conversations
        for m in system.broker_messages(c)
    )
    store = system.store()
    try:
        states = collections.Counter(
            job.state.value for c in conversations for job in store.list_jobs(conversation_id=c)
        )
    finally:
        store.close()
    print(f"\nchaos: {events}")
    print(f"answers per message: {dict(per_conversation)}; job states: {dict(states)}")
    print(
        f"Chatwoot requests: {len(system.chatwoot.requests())}, "
        f"LLM calls: {len(system.llm.calls())}"
    )
    assert per_conversation == {1: MESSAGES}
    assert max(markers.values()) == 1
    assert set(states) <= {"sent", "handed_off", "failed"}
