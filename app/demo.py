"""`ai-broker demo`: the whole system on the embedded default, against local sandboxes.

Starts the Chatwoot and LLM sandboxes in this process, `ai-broker web` and `ai-broker worker`
as real child processes wired to them (signed webhooks, a form token), and a traffic generator
that submits lead forms and plays realistic customer conversations. The terminal shows a banner
of where to look and one status line, refreshed every few seconds until Ctrl-C (or
`--duration`); every process's log goes to a file under the demo's `logs/` directory instead, so
nothing scrolls the banner away.

The children run in sessions of their own, so Ctrl-C reaches the demo alone: it stops them in
order and exits 0, rather than racing them to the exit and reporting their deaths as a failure.
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
from pathlib import Path
from typing import IO

import httpx

from app.config import Settings
from app.logs import configure_logging
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
LOG_TAIL_LINES = 20
CHILDREN = ("web", "worker", "console")


def run_demo(
    settings: Settings,
    *,
    duration_s: float | None,
    conversations: int,
    delay_scale: float | None,
) -> int:
    stop = threading.Event()
    # Ctrl-C and SIGTERM both ask for an orderly stop; neither interrupts a half-done step.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    data_dir = settings.data_dir / "demo"
    shutil.rmtree(data_dir, ignore_errors=True)
    logs = data_dir / "logs"
    logs.mkdir(parents=True)
    with ExitStack() as stack:
        demo_log = stack.enter_context((logs / "demo.log").open("a", encoding="utf-8"))
        configure_logging(settings.log_level, settings.log_format, process="demo", stream=demo_log)
        status = StatusLine(sys.stdout)
        code = _run(
            settings,
            data_dir=data_dir,
            logs=logs,
            stop=stop,
            stack=stack,
            status=status,
            duration_s=duration_s,
            conversations=conversations,
            delay_scale=delay_scale,
        )
        status.finish()
        if code == 0:
            sys.stdout.write("demo: stopping...\n")
            sys.stdout.flush()
    if code == 0:
        sys.stdout.write(f"demo stopped; the logs stay in {logs}\n")
    return code


def _run(
    settings: Settings,
    *,
    data_dir: Path,
    logs: Path,
    stop: threading.Event,
    stack: ExitStack,
    status: StatusLine,
    duration_s: float | None,
    conversations: int,
    delay_scale: float | None,
) -> int:
    """0 when it ran until `stop` or the duration (or was stopped while starting), 1 when a
    process failed to start or died."""
    sys.stdout.write("ai-broker demo: seeding a day of history and starting the processes...\n")
    sys.stdout.flush()
    # A synthetic day of history, so the console's 24-hour charts have a shape from the start;
    # live traffic adds to it from now on.
    seed_store(
        data_dir / "store.db",
        SeedPlan(jobs=HISTORY_JOBS, comparisons=HISTORY_COMPARISONS, live=False),
    )
    if stop.is_set():
        return 0
    webhook_secret = secrets.token_urlsafe(18)
    form_token = secrets.token_urlsafe(18)
    admin_token = secrets.token_urlsafe(18)
    console_password = secrets.token_urlsafe(12)
    receiver_url = f"http://{settings.host}:{settings.port}"

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
    children = {name: _spawn(name, env, stack, logs / f"{name}.log") for name in CHILDREN}
    stack.callback(_stop_children, list(children.values()))
    if not _wait_ready(receiver_url, children, stop):
        if stop.is_set():
            return 0
        _report_failure(children, logs, "did not start")
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
                f"http://{settings.host}:{settings.console_port}  (password: {console_password})",
            ),
            ("receiver", f"{receiver_url}  (/readyz, /metrics)"),
            (
                "admin API",
                f"{receiver_url}/api/admin/migration-status  (Authorization: Bearer {admin_token})",
            ),
            ("Chatwoot sandbox", f"{chatwoot.url}/_sandbox/conversations  (replies land here)"),
            ("LLM sandbox", f"{llm.url}/_sandbox/calls"),
            ("n8n sandbox", f"{n8n.url}/_sandbox/received  (the legacy workflow's share)"),
            ("store (SQLite)", f"{data_dir / 'store.db'}  (with a seeded day of history)"),
            ("traffic", "lead forms + customer conversations, continuously"),
            ("logs", f"{logs}/{{demo,web,worker,console}}.log"),
        ]
    )

    store = SqliteStore(data_dir / "store.db")
    stack.callback(store.close)
    deadline = time.monotonic() + duration_s if duration_s else None
    status.show(_status(store))
    while not stop.is_set():
        if deadline is not None and time.monotonic() >= deadline:
            break
        if any(child.poll() is not None for child in children.values()):
            status.finish()
            _report_failure(children, logs, "exited")
            return 1
        stop.wait(STATUS_EVERY_S if deadline is None else min(STATUS_EVERY_S, 1.0))
        status.show(_status(store))
    stop.set()
    status.show(_status(store))
    return 0


def _spawn(
    command: str, env: Mapping[str, str], stack: ExitStack, log_path: Path
) -> subprocess.Popen[bytes]:
    log_file = stack.enter_context(log_path.open("ab"))
    # A session of its own: the terminal's Ctrl-C goes to the demo, which stops the children.
    return subprocess.Popen(  # noqa: S603 - our own interpreter and entry point
        [sys.executable, "-m", "app.cli", command],
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
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
            child.wait()


def _wait_ready(
    receiver_url: str, children: Mapping[str, subprocess.Popen[bytes]], stop: threading.Event
) -> bool:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline and not stop.is_set():
        if any(child.poll() is not None for child in children.values()):
            return False
        try:
            if httpx.get(f"{receiver_url}/readyz", timeout=1.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        stop.wait(0.3)
    return False


def _report_failure(children: Mapping[str, subprocess.Popen[bytes]], logs: Path, what: str) -> None:
    """Which process failed and the end of its log, so the reason is on screen."""
    exited = [name for name, child in children.items() if child.poll() is not None]
    names = exited or ["web", "worker"]
    sys.stderr.write(f"demo: {' and '.join(names)} {what}; stopping\n")
    for name in names:
        log_path = logs / f"{name}.log"
        tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        sys.stderr.write(f"--- the end of {log_path} ---\n")
        sys.stderr.write("".join(f"{line}\n" for line in tail[-LOG_TAIL_LINES:]))
    sys.stderr.flush()


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


class StatusLine:
    """One line of status: rewritten in place on a terminal, a line per update elsewhere (a
    pipe or a file, where carriage returns would only garble the text)."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out
        self._in_place = out.isatty()
        self._open = False

    def show(self, text: str) -> None:
        if self._in_place:
            self._out.write(f"\r\x1b[K{text}")
            self._open = True
        else:
            self._out.write(f"{text}\n")
        self._out.flush()

    def finish(self) -> None:
        """Ends the line in place, so that what is written next starts on its own line."""
        if self._open:
            self._out.write("\n")
            self._out.flush()
            self._open = False


def _status(store: SqliteStore) -> str:
    counts = store.job_state_counts()
    busy = sum(b.current_workload for b in store.list_brokers())
    summary = ", ".join(f"{state} {n}" for state, n in sorted(counts.items())) or "no jobs yet"
    return f"[demo {time.strftime('%H:%M:%S')}] jobs: {summary}; brokers busy: {busy}"
