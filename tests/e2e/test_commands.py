"""The `ai-broker` commands as an operator runs them: start-up errors, doctor, the demo."""

from __future__ import annotations

import os
import re
import subprocess
import sys
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


def test_demo_brings_the_system_up_with_replies_flowing(tmp_path: Path) -> None:
    env = _bare_env(tmp_path, RESPONSE_DELAY_SCALE="0.3")
    result = _run(["demo", "--duration", "25", "--conversations", "3"], env, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "Chatwoot sandbox" in result.stdout
    sent = [int(n) for n in re.findall(r"\bsent (\d+)", result.stdout)]
    assert sent and max(sent) >= 3, result.stdout[-2000:]
    assert "Traceback" not in result.stderr
