"""`ai-broker demo`: the whole system on the embedded default, against local sandboxes.

Starts the Chatwoot and LLM sandboxes in this process, `ai-broker web` and `ai-broker worker`
as real child processes wired to them (signed webhooks, a form token), and a traffic generator
that submits lead forms and plays realistic customer conversations. Prints where to look, then a
status line every few seconds until Ctrl-C (or `--duration`).
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from contextlib import ExitStack

import httpx

from app.config import Settings
from app.sandbox.chatwoot import ChatwootSandbox
from app.sandbox.llm import LLMSandbox
from app.sandbox.n8n import SENDER as N8N_SENDER
from app.sandbox.n8n import N8nSandbox
from app.sandbox.traffic import TrafficGenerator
from app.store.sqlite import SqliteStore
from console.seed import SeedPlan, seed_store

log = logging.getLogger(__name__)

STATUS_EVERY_S = 10.0
STARTUP_TIMEOUT_S = 40.0
LLM_LATENCY_MS = 700
N8N_REPLY_DELAY_MS = 1500
HISTORY_JOBS = 5_000
HISTORY_COMPARISONS = 500


def run_demo(
    settings: Settings,
    *,
    duration_s: float | None,
    conversations: int,
    delay_scale: float | None,
) -> int:
    data_dir = settings.data_dir / "demo"
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    # A synthetic day of history, so the console's 24-hour charts have a shape from the start;
    # live traffic adds to it from now on.
    seed_store(
        data_dir / "store.db",
        SeedPlan(jobs=HISTORY_JOBS, comparisons=HISTORY_COMPARISONS, live=False),
    )
    webhook_secret = secrets.token_urlsafe(18)
    form_token = secrets.token_urlsafe(18)
    admin_token = secrets.token_urlsafe(18)
    console_password = secrets.token_urlsafe(12)
    receiver_url = f"http://{settings.host}:{settings.port}"
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    with ExitStack() as stack:
        chatwoot = stack.enter_context(ChatwootSandbox())
        llm = stack.enter_context(LLMSandbox())
        llm.configure(latency_ms=LLM_LATENCY_MS)
        n8n = stack.enter_context(N8nSandbox(chatwoot_url=chatwoot.url))
        n8n.configure(reply_delay_ms=N8N_REPLY_DELAY_MS)
        chatwoot.add_webhook(
            f"{receiver_url}/webhooks/chatwoot", secret=webhook_secret, kind="agent_bot"
        )
        env = {
            **os.environ,
            "DATA_DIR": str(data_dir),
            "HOST": settings.host,
            "PORT": str(settings.port),
            "CHATWOOT_BASE_URL": chatwoot.url,
            "CHATWOOT_ACCOUNT_ID": str(chatwoot.account_id),
            "CHATWOOT_INBOX_ID": str(chatwoot.inbox_id),
            "CHATWOOT_API_TOKEN": "sandbox-user-token",
            "CHATWOOT_BOT_TOKEN": "sandbox-bot-token",
            "CHATWOOT_WEBHOOK_SECRET": webhook_secret,
            "OPENAI_API_KEY": "sandbox-key",
            "OPENAI_BASE_URL": f"{llm.url}/v1",
            "FORM_TOKEN": form_token,
            "CONSOLE_PASSWORD": console_password,
            "CONSOLE_PORT": str(settings.console_port),
            "ADMIN_TOKEN": admin_token,
            "N8N_AI_BROKER_WEBHOOK_URL": f"{n8n.url}/webhook/chatwoot-ai-broker",
            "N8N_SENDER": N8N_SENDER,
            # Half the conversations on each system, n8n's half shadowed: every console page
            # has something to show.
            "ROLLOUT_PERCENTAGE": os.environ.get("ROLLOUT_PERCENTAGE", "50"),
            "ROLLOUT_SHADOW": os.environ.get("ROLLOUT_SHADOW", "true"),
            "RESPONSE_DELAY_SCALE": str(
                delay_scale if delay_scale is not None else settings.response_delay_scale
            ),
        }
        children = [_spawn("web", env), _spawn("worker", env), _spawn("console", env)]
        stack.callback(_stop_children, children)
        if not _wait_ready(receiver_url, children):
            sys.stderr.write("demo: the receiver or worker did not start; see the log above\n")
            return 1

        traffic = TrafficGenerator(
            chatwoot, lead_form_url=f"{receiver_url}/api/conversations", form_token=form_token
        )
        player = threading.Thread(
            target=_play_forever, args=(traffic, conversations, stop), daemon=True
        )
        player.start()
        stack.callback(stop.set)
        _banner(
            [
                (
                    "console",
                    f"http://{settings.host}:{settings.console_port}  "
                    f"(password: {console_password})",
                ),
                ("receiver", f"{receiver_url}  (/readyz, /metrics)"),
                (
                    "admin API",
                    f"{receiver_url}/api/admin/migration-status  "
                    f"(Authorization: Bearer {admin_token})",
                ),
                ("Chatwoot sandbox", f"{chatwoot.url}/_sandbox/conversations  (replies land here)"),
                ("LLM sandbox", f"{llm.url}/_sandbox/calls"),
                ("n8n sandbox", f"{n8n.url}/_sandbox/received  (the legacy workflow's share)"),
                ("store (SQLite)", f"{data_dir / 'store.db'}  (with a seeded day of history)"),
                ("traffic", "lead forms + customer conversations, continuously"),
            ]
        )

        store = SqliteStore(data_dir / "store.db")
        stack.callback(store.close)
        deadline = time.monotonic() + duration_s if duration_s else None
        try:
            while not stop.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if any(child.poll() is not None for child in children):
                    sys.stderr.write("demo: a child process exited; stopping\n")
                    return 1
                stop.wait(STATUS_EVERY_S if deadline is None else min(STATUS_EVERY_S, 1.0))
                _status(store)
        except KeyboardInterrupt:
            pass
        stop.set()
        _status(store)
    return 0


def _spawn(command: str, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603 - our own interpreter and entry point
        [sys.executable, "-m", "app.cli", command], env=dict(env)
    )


def _stop_children(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGINT)
    for child in children:
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()


def _wait_ready(receiver_url: str, children: list[subprocess.Popen[bytes]]) -> bool:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if any(child.poll() is not None for child in children):
            return False
        try:
            if httpx.get(f"{receiver_url}/readyz", timeout=1.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    return False


def _play_forever(traffic: TrafficGenerator, conversations: int, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            traffic.run(conversations, stop_event=stop)
        except Exception:  # keep the demo going; the next round starts fresh
            log.exception("traffic round failed")
            stop.wait(2.0)


def _banner(places: list[tuple[str, str]]) -> None:
    width = max(len(name) for name, _ in places) + 3
    lines = [f"  {name:<{width}}{where}" for name, where in places]
    sys.stdout.write(
        "\nai-broker demo is running (Ctrl-C stops everything)\n" + "\n".join(lines) + "\n\n"
    )
    sys.stdout.flush()


def _status(store: SqliteStore) -> None:
    counts = store.job_state_counts()
    busy = sum(b.current_workload for b in store.list_brokers())
    summary = ", ".join(f"{state} {n}" for state, n in sorted(counts.items())) or "no jobs yet"
    sys.stdout.write(f"[demo] jobs: {summary}; brokers busy: {busy}\n")
    sys.stdout.flush()
