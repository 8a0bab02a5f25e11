"""The `ai-broker` commands as an operator runs them: start-up errors, doctor, the demo."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import pytest

from app.sandbox.chatwoot import ChatwootSandbox
from app.sandbox.llm import LLMSandbox
from console.accounts import OperatorAccounts
from tests.support.system import free_port, system_env

pytestmark = pytest.mark.e2e


def _run(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _bare_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(
            ("CHATWOOT_", "OPENAI_", "REDIS_", "SUPABASE_", "WEBHOOK_", "FORM_", "ALLOW_")
        )
    }
    return {**env, "DATA_DIR": str(tmp_path), "PORT": str(free_port()), **extra}


def test_web_refuses_to_start_without_webhook_authentication(tmp_path: Path) -> None:
    result = _run(["web"], _bare_env(tmp_path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "CHATWOOT_WEBHOOK_SECRET" in lines[0] and "Traceback" not in result.stderr


def test_web_refuses_to_start_with_the_lead_form_open_unless_told_to(tmp_path: Path) -> None:
    signed = {"CHATWOOT_WEBHOOK_SECRET": "s"}
    refused = _run(["web"], _bare_env(tmp_path, **signed))
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "FORM_TOKEN" in lines[0] and "ALLOW_OPEN_LEAD_FORM" in lines[0]

    env = _bare_env(tmp_path, **signed, ALLOW_OPEN_LEAD_FORM="true")
    web = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "web"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert web.stderr is not None
        first = web.stderr.readline()
        assert "lead form is open to anyone" in first and "FORM_TOKEN" in first
    finally:
        web.terminate()
        web.wait(timeout=15)


@pytest.mark.parametrize(
    ("variable", "value"),
    [("PORT", "eighty"), ("RESPONSE_DELAY_SCALE", "-1"), ("LOG_FORMAT", "xml")],
)
def test_invalid_setting_stops_with_one_line_naming_it(
    tmp_path: Path, variable: str, value: str
) -> None:
    result = _run(["web"], _bare_env(tmp_path, **{variable: value}))
    assert result.returncode == 2
    assert variable in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_doctor_reports_each_dependency_and_fails_on_a_bad_token(tmp_path: Path) -> None:
    with ChatwootSandbox() as chatwoot, LLMSandbox() as llm:
        env = system_env(tmp_path, free_port(), chatwoot, llm)
        assert _run(["brokers", "seed"], env).returncode == 0
        healthy = _run(["doctor"], env)
        assert healthy.returncode == 0, healthy.stdout + healthy.stderr
        for name in ("store", "queue", "chatwoot", "openai", "webhooks"):
            assert re.search(rf"^\[ok  \] {name}\b", healthy.stdout, re.MULTILINE), healthy.stdout
        assert "sandbox-user-token" not in healthy.stdout

        broken = _run(["doctor"], {**env, "CHATWOOT_API_TOKEN": "wrong-token"})
        assert broken.returncode == 1
        assert re.search(r"^\[FAIL\] chatwoot\b.*401", broken.stdout, re.MULTILINE), broken.stdout
        assert "wrong-token" not in broken.stdout


def test_console_hash_password_prints_an_account_line_the_console_accepts(tmp_path: Path) -> None:
    env = _bare_env(tmp_path)
    made = subprocess.run(
        [sys.executable, "-m", "app.cli", "console", "hash-password", 'Priya "P" Raman'],
        env=env,
        input="a long operator password\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    operators = tomllib.loads(f"[console.operators]\n{made.stdout}")["console"]["operators"]
    accounts = OperatorAccounts.from_secrets(operators)
    assert accounts.authenticate('priya "p" raman', "a long operator password") == (
        'Priya "P" Raman'
    )
    assert "a long operator password" not in made.stdout

    short = subprocess.run(
        [sys.executable, "-m", "app.cli", "console", "hash-password", "Priya"],
        env=env,
        input="short\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert short.returncode == 2 and "at least 12 characters" in short.stderr
    assert short.stdout == ""


def test_brokers_seed_is_idempotent(tmp_path: Path) -> None:
    env = _bare_env(tmp_path)
    first = _run(["brokers", "seed"], env)
    second = _run(["brokers", "seed"], env)
    assert "5 broker(s) added" in first.stdout
    assert "0 broker(s) added, 5 already present" in second.stdout


def test_demo_brings_the_system_up_with_replies_flowing_and_ctrl_c_stops_it_cleanly(
    tmp_path: Path,
) -> None:
    env = _bare_env(tmp_path, RESPONSE_DELAY_SCALE="0.3")
    # A session of its own, like a terminal's foreground job, so Ctrl-C can go to its group.
    demo = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "demo", "--conversations", "3"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in demo.stdout or ()])
    reader.start()
    seen: list[str] = []
    # The seeded history has sent replies already: live ones show as the count going up.
    sent_at_start: int | None = None
    sent = 0
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and demo.poll() is None:
        try:
            seen.append(lines.get(timeout=1))
        except queue.Empty:
            continue
        counts = [int(n) for n in re.findall(r"\bsent (\d+)", seen[-1])]
        if counts:
            sent_at_start = counts[0] if sent_at_start is None else sent_at_start
            sent = counts[0]
        if sent_at_start is not None and sent - sent_at_start >= 3:
            break
    os.killpg(demo.pid, signal.SIGINT)  # what Ctrl-C sends to the foreground process group
    try:
        code = demo.wait(timeout=40)
    finally:
        demo.kill()
    reader.join(timeout=5)
    seen.extend(lines.queue)
    stdout, stderr = "".join(seen), demo.stderr.read() if demo.stderr else ""
    assert code == 0, stdout[-2000:] + stderr[-4000:]
    assert sent_at_start is not None and sent - sent_at_start >= 3, stdout[-2000:]
    logs = tmp_path / "demo" / "logs"
    # The terminal holds the banner and the status lines; every process's log is in its file.
    assert "Chatwoot sandbox" in stdout and str(logs) in stdout
    assert not re.search(r"\b(DEBUG|INFO|WARNING|ERROR)\b", stdout + stderr), stdout + stderr
    assert "Traceback" not in stdout + stderr
    assert f"demo stopped; the logs stay in {logs}" in stdout
    for name in ("web", "worker", "console"):
        assert (logs / f"{name}.log").stat().st_size > 0, name
    assert " INFO web " in (logs / "web.log").read_text()
    # The children were stopped, not orphaned: the receiver's port is free again.
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", int(env["PORT"]))) != 0


def test_demo_whose_receiver_cannot_start_says_which_and_shows_its_log(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = _bare_env(tmp_path, PORT=str(taken.getsockname()[1]))
        result = _run(["demo", "--duration", "5"], env, timeout=120)
    assert result.returncode == 1
    log = tmp_path / "demo" / "logs" / "web.log"
    assert "demo: web did not start; stopping" in result.stderr, result.stderr
    assert f"--- the end of {log} ---" in result.stderr
    assert "Address already in use" in result.stderr
