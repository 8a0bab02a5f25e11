"""Runs the real system for end-to-end tests: sandboxes in this process, `ai-broker web` and
`ai-broker worker` as child processes wired to them, exactly as `ai-broker demo` does."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from app.sandbox.chatwoot import ChatwootSandbox
from app.sandbox.llm import LLMSandbox
from app.store.sqlite import SqliteStore

T = TypeVar("T")

WEBHOOK_SECRET = "e2e-webhook-secret"
FORM_TOKEN = "e2e-form-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    probe: Callable[[], T | None], *, timeout: float = 20.0, interval: float = 0.1, what: str = ""
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or probe}")
        time.sleep(interval)


@dataclass
class RunningSystem:
    data_dir: Path
    port: int
    chatwoot: ChatwootSandbox
    llm: LLMSandbox
    env: dict[str, str]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def store(self) -> SqliteStore:
        return SqliteStore(self.data_dir / "store.db")

    def start(self, *names: str) -> None:
        for name in names:
            self.start_as(name, name)

    def start_as(self, name: str, command: str, **env: str) -> None:
        """Run `ai-broker <command>` as process `name` (a second worker, a receiver on another
        port), with `env` over the system's environment."""
        log_path = self.data_dir / f"{name}.log"
        self.logs[name] = log_path
        with log_path.open("ab") as log_file:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "app.cli", command],
                env={**self.env, **env},
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )

    def stop(self, name: str, sig: int = signal.SIGINT, timeout: float = 15.0) -> None:
        process = self.processes.pop(name)
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.stop(name)

    def wait_ready(self, timeout: float = 40.0) -> None:
        def ready() -> bool:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise AssertionError(f"{name} exited early:\n{self.log_tail(name)}")
            try:
                return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout=timeout, interval=0.2, what="/readyz")

    def log_tail(self, name: str, lines: int = 60) -> str:
        path = self.logs.get(name)
        if path is None or not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # -- conversation helpers ---------------------------------------------------------------
    def new_conversation(self, name: str = "Tan Wei Ming") -> int:
        suffix = time.monotonic_ns() % 10**7
        _, conversation = self.chatwoot.create_lead_conversation(
            name, f"lead{suffix}@example.com", f"+6591{suffix:07d}"[:11]
        )
        return int(conversation["id"])

    def broker_messages(self, conversation_id: int) -> list[dict[str, Any]]:
        """Public outgoing messages posted by the bot (our marker) in a conversation."""
        return [
            m
            for m in self.chatwoot.messages(conversation_id)
            if m["message_type"] == 1
            and not m["private"]
            and "broker_job_id" in (m.get("content_attributes") or {})
        ]

    def wait_for_replies(
        self, conversation_id: int, count: int = 1, timeout: float = 20.0
    ) -> list[dict[str, Any]]:
        return wait_until(
            lambda: (r := self.broker_messages(conversation_id)) and len(r) >= count and r,
            timeout=timeout,
            what=f"{count} broker replies in conversation {conversation_id}",
        )

    def settle(self, seconds: float = 2.0) -> None:
        """Let in-flight webhooks and jobs finish, so 'nothing more happens' can be asserted."""
        self.chatwoot.wait_for_deliveries(timeout_s=10)
        time.sleep(seconds)
        self.chatwoot.wait_for_deliveries(timeout_s=10)


def system_env(
    data_dir: Path, port: int, chatwoot: ChatwootSandbox, llm: LLMSandbox, **extra: str
) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CHATWOOT_", "OPENAI_", "REDIS_", "SUPABASE_", "N8N_"))
    }
    env.update(
        {
            "DATA_DIR": str(data_dir),
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "WEB_CONCURRENCY": "2",
            "CHATWOOT_BASE_URL": chatwoot.url,
            "CHATWOOT_ACCOUNT_ID": str(chatwoot.account_id),
            "CHATWOOT_INBOX_ID": str(chatwoot.inbox_id),
            "CHATWOOT_API_TOKEN": "sandbox-user-token",
            "CHATWOOT_BOT_TOKEN": "sandbox-bot-token",
            "CHATWOOT_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "OPENAI_API_KEY": "sandbox-key",
            "OPENAI_BASE_URL": f"{llm.url}/v1",
            "LLM_TIMEOUT_S": "3",
            "FORM_TOKEN": FORM_TOKEN,
            "LOG_LEVEL": "INFO",
        }
    )
    env.update(extra)
    return env


def merged(base: Mapping[str, str], **extra: str) -> dict[str, str]:
    return {**base, **extra}
