from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.sandbox.chatwoot import ChatwootSandbox
from app.sandbox.llm import LLMSandbox
from tests.support.system import WEBHOOK_SECRET, RunningSystem, free_port, system_env

DELAY_SCALE = 0.5


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSystem]:
    """web + worker as real processes against the Chatwoot and LLM sandboxes."""
    data_dir: Path = tmp_path_factory.mktemp("system")
    port = free_port()
    with ChatwootSandbox(webhook_retry_wait_s=0.5) as chatwoot, LLMSandbox() as llm:
        chatwoot.add_webhook(
            f"http://127.0.0.1:{port}/webhooks/chatwoot", secret=WEBHOOK_SECRET, kind="agent_bot"
        )
        env = system_env(data_dir, port, chatwoot, llm, RESPONSE_DELAY_SCALE=str(DELAY_SCALE))
        running = RunningSystem(data_dir=data_dir, port=port, chatwoot=chatwoot, llm=llm, env=env)
        running.start("web", "worker")
        try:
            running.wait_ready()
            yield running
        finally:
            running.stop_all()


@pytest.fixture(autouse=True)
def _clean_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "system" in request.fixturenames:
        running: RunningSystem = request.getfixturevalue("system")
        running.chatwoot.faults.reset()
        running.llm.faults.reset()
        running.llm.configure(latency_ms=0, fixed_reply=None)
