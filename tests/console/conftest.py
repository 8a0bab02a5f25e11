"""AppTest fixtures: a small seeded store per test (copied from one seeded template), the
console's environment, a fake n8n that accepts every forward, and a logged-in operator."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import psycopg
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from app.bootstrap import build_analytics, build_store
from app.config import Settings
from app.sandbox.n8n import SENDER as N8N_SENDER
from app.store.analytics import Analytics
from app.store.base import Store
from console import auth
from console.seed import SeedPlan, seed_store
from tests.support.postgres import database_from_template, temporary_database
from tests.support.store_copy import copy_sqlite_store

MAIN = Path(__file__).resolve().parents[2] / "console" / "main.py"
PASSWORD = "console-test-password"
OPERATOR = auth.Operator(name="Tester", email=None, method=auth.AccessMethod.PASSWORD)
TIMEOUT_S = 30
SMALL_DAY = SeedPlan(jobs=3_000, comparisons=300, hours=24)


@pytest.fixture(autouse=True)
def _keep_main_module() -> Iterator[None]:
    """AppTest leaves the console script installed as `__main__`; multiprocessing's spawn start
    method would then run the console in every child process a later test starts."""
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main


class FakeN8n:
    """Accepts every forwarded webhook (202) and remembers the bodies."""

    def __init__(self) -> None:
        self.received: list[dict[str, object]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                outer.received.append(json.loads(self.rfile.read(length) or b"{}"))
                self.send_response(202)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"status": "ok"}')

            def log_message(self, *_: object) -> None:
                return

        class Server(ThreadingHTTPServer):
            request_queue_size = 64  # a rollback forwards on 8 threads at once
            daemon_threads = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/webhook/chatwoot-ai-broker"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="session")
def n8n() -> Iterator[FakeN8n]:
    server = FakeN8n()
    yield server
    server.close()


@pytest.fixture(scope="session")
def seeded_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("seeded") / "store.db"
    seed_store(path, SMALL_DAY)
    return path


@pytest.fixture(scope="session")
def postgres_template(seeded_template: Path) -> Iterator[str]:
    """The seeded day copied into a migrated PostgreSQL database, the template of each test's."""
    with temporary_database() as dsn:
        copy_sqlite_store(seeded_template, dsn)
        yield dsn


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    """Every console test runs on the embedded store and on PostgreSQL (DATABASE_URL)."""
    return str(request.param)


@pytest.fixture
def data_dir(
    request: pytest.FixtureRequest,
    backend: str,
    tmp_path: Path,
    seeded_template: Path,
    n8n: FakeN8n,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Path]:
    """A fresh copy of the seeded store, and the environment the console reads."""
    directory = tmp_path / "data"
    directory.mkdir()
    database: str | None = None
    if backend == "postgres":
        database = request.getfixturevalue("_postgres_copy")
    else:
        shutil.copy(seeded_template, directory / "store.db")
    for name in (
        "CHATWOOT_BASE_URL",
        "DATABASE_URL",
        "SUPABASE_URL",
        "SUPABASE_SERVICE_ROLE_KEY",
        "REDIS_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATA_DIR", str(directory))
    if database is not None:
        monkeypatch.setenv("DATABASE_URL", database)
    monkeypatch.setenv("CONSOLE_PASSWORD", PASSWORD)
    monkeypatch.setenv("N8N_AI_BROKER_WEBHOOK_URL", n8n.url)
    monkeypatch.setenv("N8N_SENDER", N8N_SENDER)
    monkeypatch.setattr(auth, "FAILURE_DELAY_S", 0.0)
    _workers_alive_now(directory, database)
    yield directory
    # Release the cached backends (store connections, thread pools) of this test's store.
    st.cache_resource.clear()
    st.cache_data.clear()


# The seeded day's live workers beat at the moment it was seeded, once per session: beating
# again now keeps them alive (HEARTBEAT_STALE_S = 30 s) however long the session has run.
_REFRESH_LIVE_WORKERS = (
    "UPDATE worker_heartbeats SET seen_at = {now} "
    "WHERE seen_at >= (SELECT max(seen_at) FROM worker_heartbeats) - 1"
)


def _workers_alive_now(directory: Path, database: str | None) -> None:
    statement = _REFRESH_LIVE_WORKERS.format(now=repr(time.time()))
    if database is not None:
        with psycopg.connect(database, autocommit=True) as postgres:
            postgres.execute(statement.encode())
        return
    embedded = sqlite3.connect(directory / "store.db", isolation_level=None)
    try:
        embedded.execute(statement)
    finally:
        embedded.close()


@pytest.fixture
def _postgres_copy(postgres_template: str) -> Iterator[str]:
    with database_from_template(postgres_template) as dsn:
        yield dsn


@pytest.fixture
def store(data_dir: Path) -> Iterator[Store]:
    """The store the console is configured with (SQLite in DATA_DIR, or DATABASE_URL)."""
    opened = build_store(Settings.from_env(), pool_size=2)
    yield opened
    opened.close()


@pytest.fixture
def analytics(data_dir: Path, store: Store) -> Iterator[Analytics]:
    opened = build_analytics(Settings.from_env(), store)
    yield opened
    opened.close()


@pytest.fixture
def sql(data_dir: Path, backend: str) -> Callable[..., None]:
    """Run one statement on the console's store (`?` placeholders), to set a scene."""

    def run(statement: str, params: tuple[object, ...] = ()) -> None:
        if backend == "postgres":
            with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as postgres:
                postgres.execute(statement.replace("?", "%s").encode(), params)
            return
        embedded = sqlite3.connect(data_dir / "store.db", isolation_level=None)
        try:
            embedded.execute(statement, params)
        finally:
            embedded.close()

    return run


@pytest.fixture
def console(data_dir: Path) -> Callable[..., AppTest]:
    """An AppTest of the console on `page`, logged in as OPERATOR (or `operator`)."""

    def open_page(page: str | None = None, *, operator: auth.Operator | None = OPERATOR) -> AppTest:
        app = AppTest.from_file(str(MAIN), default_timeout=TIMEOUT_S)
        if operator is not None:
            app.session_state[auth.SESSION_KEY] = operator
        app.run()
        if page is not None:
            app.switch_page(f"views/{page}.py").run()
        return app

    return open_page


def table(app: AppTest, column: str) -> pd.DataFrame:
    """The first table on the page that has `column`."""
    for frame in app.dataframe:
        value = frame.value
        if column in value.columns:
            return value
    raise AssertionError(f"no table with a {column!r} column")


def no_failures(app: AppTest) -> None:
    """No exception and no error box on the page."""
    assert not app.exception, [e.value for e in app.exception]
    assert not app.error, [e.value for e in app.error]
