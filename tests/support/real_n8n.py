"""The real n8n, for the end-to-end test against it: the version tests/real_n8n/install-n8n
installed from npm into a cache outside the repository, run headless on 127.0.0.1 with SQLite as
its database and its telemetry off, the workflows imported and published with its own CLI."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from tests.support.system import free_port, wait_until

N8N_VERSION = "2.41.1"
REFERENCE_WORKFLOW = Path(__file__).parents[2] / "docs" / "n8n" / "chatwoot-ai-broker.json"
REFERENCE_PATH = "chatwoot-ai-broker"
SILENT_PATH = "chatwoot-ai-broker-silent"
STARTED = {"message": "Workflow was started"}  # a webhook node responding immediately


def n8n_home() -> Path:
    """Where install-n8n put this version (the same rule as the script's)."""
    if explicit := os.environ.get("AI_BROKER_N8N_HOME"):
        return Path(explicit)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "ai-broker" / f"n8n-{N8N_VERSION}"


class N8nNotInstalled(RuntimeError):
    pass


class RealN8n:
    """One n8n instance: its user folder (settings, SQLite database) lives in `folder`, so it
    keeps its workflows and executions across `kill()` and `start()`."""

    def __init__(self, folder: Path, workflow_env: Mapping[str, str], home: Path | None = None):
        self.home = home or n8n_home()
        if not (self.home / ".installed").exists():
            raise N8nNotInstalled(
                f"n8n {N8N_VERSION} is not installed in {self.home}: run `make n8n` "
                "(tests/real_n8n/install-n8n) first"
            )
        self.folder = folder
        self.port = free_port()
        self._runner_port = free_port()
        self._workflow_env = dict(workflow_env)
        self._process: subprocess.Popen[bytes] | None = None
        self.log_path = folder / "n8n.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def webhook_url(self, path: str) -> str:
        return f"{self.url}/webhook/{path}"

    def _env(self) -> dict[str, str]:
        inherited = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("N8N_", "DB_", "EXECUTIONS_", "OPENAI_", "CHATWOOT_"))
        }
        return {
            **inherited,
            "PATH": f"{self.home / 'node_modules' / '.bin'}:{inherited.get('PATH', '')}",
            "N8N_USER_FOLDER": str(self.folder),
            "N8N_LISTEN_ADDRESS": "127.0.0.1",
            "N8N_HOST": "127.0.0.1",
            "N8N_PORT": str(self.port),
            "N8N_RUNNERS_BROKER_PORT": str(self._runner_port),
            "DB_TYPE": "sqlite",
            "N8N_DIAGNOSTICS_ENABLED": "false",
            "N8N_VERSION_NOTIFICATIONS_ENABLED": "false",
            "N8N_TEMPLATES_ENABLED": "false",
            "N8N_ENFORCE_SETTINGS_FILE_PERMISSIONS": "false",
            # The reference workflow reads its settings from the environment.
            "N8N_BLOCK_ENV_ACCESS_IN_NODE": "false",
            # Every execution's data is kept: the test reads the headers n8n received.
            "EXECUTIONS_DATA_SAVE_ON_SUCCESS": "all",
            "N8N_LOG_LEVEL": "info",
            **self._workflow_env,
        }

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [str(self.home / "node_modules" / ".bin" / "n8n"), *args],
            env=self._env(),
            capture_output=True,
            timeout=180,
            check=False,
        )
        output = (done.stdout + done.stderr).decode(errors="replace")
        if done.returncode != 0:
            raise RuntimeError(f"n8n {' '.join(args)} failed ({done.returncode}):\n{output}")
        return output

    def install_workflow(self, workflow: Mapping[str, Any]) -> None:
        """Import a workflow and publish it (n8n must not be running: the CLI writes the
        database that a running n8n read at start-up)."""
        assert self._process is None, "stop n8n before changing its workflows"
        path = self.folder / f"{workflow['id']}.json"
        path.write_text(json.dumps(workflow))
        self.cli("import:workflow", f"--input={path}")
        self.cli("publish:workflow", f"--id={workflow['id']}")

    def start(self) -> float:
        """Start n8n; returns the monotonic time it was started at."""
        assert self._process is None, "n8n is already running"
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [str(self.home / "node_modules" / ".bin" / "n8n"), "start"],
                env=self._env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its task runner goes with it on kill()
            )
        return time.monotonic()

    def wait_ready(self, webhook_path: str, timeout: float = 90.0) -> None:
        """Until the workflow's webhook acknowledges: the port refuses connections while n8n
        boots, then answers 404 until the workflow is registered."""

        def acknowledged() -> bool:
            if self._process is not None and self._process.poll() is not None:
                raise AssertionError(f"n8n exited early:\n{self.log_tail()}")
            try:
                response = httpx.post(self.webhook_url(webhook_path), json={}, timeout=2)
            except httpx.HTTPError:
                return False
            return response.status_code == 200 and _json(response) == STARTED

        wait_until(acknowledged, timeout=timeout, interval=0.2, what="n8n's webhook")

    def kill(self) -> None:
        """SIGKILL, n8n and its task runner: what a crash or an OOM kill does."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)

    def execution_data(self) -> list[str]:
        """The stored data of every execution so far (the webhook node's output holds the
        headers and body n8n received), as n8n wrote it."""
        database = self.folder / ".n8n" / "database.sqlite"
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10) as db:
            return [row[0] for row in db.execute("SELECT data FROM execution_data")]

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def reference_workflow() -> dict[str, Any]:
    return json.loads(REFERENCE_WORKFLOW.read_text())


def silent_workflow() -> dict[str, Any]:
    """The reference workflow on its own webhook path with its Chatwoot node disabled: n8n
    acknowledges every message and never posts a reply (what a broken credential looks like)."""
    workflow = reference_workflow()
    workflow["id"] = "aibrokersilent01"
    workflow["name"] = f"{workflow['name']} (Chatwoot reply disabled)"
    for node in workflow["nodes"]:
        if node["type"] == "n8n-nodes-base.webhook":
            node["parameters"]["path"] = SILENT_PATH
            node["webhookId"] = "5f1d2c3b-0a4e-4c8b-9f1a-6b7c8d9e0f12"
        elif node["name"] == "Chatwoot reply":
            node["disabled"] = True
    return workflow
