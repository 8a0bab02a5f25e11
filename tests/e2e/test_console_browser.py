"""The console in a real browser: `ai-broker console` as a real process over a seeded store
(100,000 ledger rows, 10,000 comparisons), driven by Debian's chromium through Playwright, on the
embedded SQLite store, on PostgreSQL (DATABASE_URL) and on Supabase's REST API (SUPABASE_URL:
the PostgREST sandbox over PostgreSQL), the same rows copied to each.

Opens every page after logging in, checks that none shows an exception, a traceback or an error
box, and saves the screenshots that docs/console.md and the README show (docs/screenshots/,
from the SQLite run; the others' go to a temporary directory).
Needs `chromium` (apt) and `playwright` (pip, the dev extra); it installs nothing itself.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.bootstrap import build_store
from app.config import Settings
from app.sandbox.n8n import SENDER as N8N_SENDER
from app.sandbox.n8n import WEBHOOK_PATH, N8nSandbox
from app.store.base import Store
from app.store.models import WorkerHeartbeat
from console.accounts import hash_password
from console.seed import SeedPlan, seed_store
from tests.support.postgres import require_postgres, supabase_bed, temporary_database
from tests.support.store_copy import copy_sqlite_store
from tests.support.system import free_port, wait_until

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
# The README's and docs/console.md's screenshots; CONSOLE_SCREENSHOTS_DIR puts them elsewhere
# (a CI run that should leave the work tree untouched).
SCREENSHOTS = Path(
    os.environ.get("CONSOLE_SCREENSHOTS_DIR")
    or Path(__file__).resolve().parents[2] / "docs" / "screenshots"
)
PASSWORD = "browser-test-password"
OPERATOR = "Wei Ling"
VIEWPORT = {"width": 1680, "height": 1000}
PAGES = (
    ("Overview", "overview"),
    ("Brokers", "brokers"),
    ("Compare", "compare"),
    ("Rollout", "rollout"),
    ("Jobs", "jobs"),
)
ERROR_SELECTORS = ('[data-testid="stException"]', '[data-testid="stAlertContentError"]')


@dataclass
class Console:
    url: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str]
    screenshots: Path

    def store(self) -> Store:
        """The store the console runs on."""
        return build_store(Settings.from_env(self.env), pool_size=1)

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-60:])


def _require_browser() -> None:
    if shutil.which("chromium") is None or not Path(CHROMIUM).exists():
        pytest.fail(
            "Debian chromium is missing: apt-get update && apt-get install -y chromium "
            "(`make test` does it on a fresh machine)"
        )
    try:
        import playwright  # noqa: F401
    except ImportError:
        pytest.fail("playwright is missing: pip install -e '.[dev]'")


def _beat(store: Store, stop: threading.Event) -> None:
    """A live worker's heartbeats (the seeded workers would look stopped after 30 s)."""
    started = time.time()
    while not stop.is_set():
        for worker in ("worker-a:4121", "worker-b:4188"):
            store.heartbeat(
                WorkerHeartbeat(
                    worker,
                    f"broker-{worker[:8]}",
                    int(worker[-4:]),
                    32,
                    started - 5.5 * 3600,
                    time.time(),
                )
            )
        stop.wait(2.0)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("seeded") / "store.db"
    # A quarter of the default day: every page has full charts and tables, and seeding and
    # copying it into the two PostgreSQL stores costs a fraction (the console bench measures
    # the default day's volume).
    seed_store(path, SeedPlan(jobs=25_000, comparisons=2_500))
    return path


@pytest.fixture(scope="module", params=["sqlite", "postgres", "supabase"])
def console(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, seeded: Path
) -> Iterator[Console]:
    _require_browser()
    data_dir = tmp_path_factory.mktemp("console")
    with ExitStack() as stack:
        database: dict[str, str] = {}
        screenshots = SCREENSHOTS
        if request.param == "postgres":
            require_postgres()
            dsn = stack.enter_context(temporary_database())
            copy_sqlite_store(seeded, dsn)
            database["DATABASE_URL"] = dsn
            screenshots = data_dir / "screenshots"
        elif request.param == "supabase":
            bed = stack.enter_context(supabase_bed())
            copy_sqlite_store(seeded, bed.dsn)
            database.update(SUPABASE_URL=bed.sandbox.url, SUPABASE_SERVICE_ROLE_KEY=bed.key)
            screenshots = data_dir / "screenshots"
        else:
            shutil.copy(seeded, data_dir / "store.db")
        yield from _run_console(data_dir, database, screenshots)


def _run_console(data_dir: Path, database: dict[str, str], screenshots: Path) -> Iterator[Console]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CHATWOOT_", "OPENAI_", "REDIS_", "SUPABASE_", "N8N_", "DATABASE_"))
    }
    env.update(database, DATA_DIR=str(data_dir))
    store = build_store(Settings.from_env(env), pool_size=1)
    stop = threading.Event()
    heart = threading.Thread(target=_beat, args=(store, stop), daemon=True)
    heart.start()
    port = free_port()
    log_path = data_dir / "console.log"
    # The operator's own account (no shared password), from the secrets in the working directory.
    secrets = data_dir / ".streamlit" / "secrets.toml"
    secrets.parent.mkdir(exist_ok=True)
    secrets.write_text(f'[console.operators]\n"{OPERATOR}" = "{hash_password(PASSWORD)}"\n')
    env.pop("CONSOLE_PASSWORD", None)
    with N8nSandbox() as n8n:
        env.update(
            HOST="127.0.0.1",
            CONSOLE_PORT=str(port),
            N8N_AI_BROKER_WEBHOOK_URL=f"{n8n.url}{WEBHOOK_PATH}",
            N8N_SENDER=N8N_SENDER,
        )
        with log_path.open("ab") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "console"],
                env=env,
                cwd=data_dir,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        running = Console(f"http://127.0.0.1:{port}", data_dir, process, log_path, env, screenshots)
        try:
            _wait_healthy(running)
            yield running
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            stop.set()
            heart.join(timeout=5)
            store.close()


def _wait_healthy(console: Console) -> None:
    def healthy() -> bool:
        if console.process.poll() is not None:
            raise AssertionError(f"the console exited early:\n{console.log_tail()}")
        try:
            return httpx.get(f"{console.url}/_stcore/health", timeout=1).text == "ok"
        except httpx.HTTPError:
            return False

    wait_until(healthy, timeout=60, interval=0.3, what="the console's /_stcore/health")


def _settle(page: object, *, charts: int = 0) -> None:
    """Wait until the script run is over and the charts are drawn."""
    from playwright.sync_api import Page

    assert isinstance(page, Page)
    page.wait_for_selector('[data-testid="stMain"]', timeout=30_000)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')",
        timeout=30_000,
    )
    if charts:
        page.wait_for_function(
            f"() => document.querySelectorAll('.js-plotly-plot .main-svg').length >= {charts}",
            timeout=30_000,
        )
    page.wait_for_timeout(800)


def _screenshot(page: object, directory: Path, name: str) -> None:
    from playwright.sync_api import Page

    assert isinstance(page, Page)
    directory.mkdir(parents=True, exist_ok=True)
    height = page.evaluate(
        "() => Math.max(...[...document.querySelectorAll("
        '\'[data-testid="stMain"], [data-testid="stMainBlockContainer"]\')]'
        ".map(e => e.scrollHeight), 900)"
    )
    page.set_viewport_size({"width": VIEWPORT["width"], "height": min(int(height) + 40, 4200)})
    page.wait_for_timeout(600)
    page.screenshot(path=str(directory / f"{name}.png"))
    page.set_viewport_size(VIEWPORT)


def _assert_no_errors(page: object, where: str, *, traceback_allowed: bool = False) -> None:
    from playwright.sync_api import Page

    assert isinstance(page, Page)
    for selector in ERROR_SELECTORS:
        assert page.locator(selector).count() == 0, (
            f"{where}: {selector}: {page.locator(selector).first.inner_text()}"
        )
    text = page.locator('[data-testid="stMain"]').inner_text()
    if not traceback_allowed:
        assert "Traceback" not in text, f"{where} shows a traceback"
    for phrase in ("This app has encountered an error", "StreamlitAPIException"):
        assert phrase not in text, f"{where}: {phrase}"


def test_every_page_renders_without_errors_and_is_screenshotted(console: Console) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            context = browser.new_context(
                viewport=VIEWPORT, timezone_id="Asia/Singapore", locale="en-SG"
            )
            page = context.new_page()
            page.goto(console.url, wait_until="domcontentloaded")
            page.get_by_role("textbox", name="Your name").fill(OPERATOR)
            page.get_by_role("textbox", name="Your password").fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
            page.get_by_role("heading", name="Overview").wait_for(timeout=30_000)

            for title, path in PAGES:
                nav = page.locator('[data-testid="stSidebarNav"]')
                nav.get_by_role("link", name=title).click()
                page.get_by_role("heading", name=title).first.wait_for(timeout=30_000)
                _settle(
                    page,
                    charts={"overview": 3, "brokers": 2, "compare": 2, "rollout": 1, "jobs": 0}[
                        path
                    ],
                )
                _assert_no_errors(page, title)
                assert page.locator(".js-plotly-plot").count() >= (path != "jobs")
                _screenshot(page, console.screenshots, path)

            # A failed job opened: message, reply, timings, error and the full traceback.
            page.get_by_role("button", name="failed", exact=False).first.click()
            _settle(page)
            page.locator('[data-testid="stDataFrame"]').first.wait_for()
            store = console.store()
            try:
                failed = store.list_jobs(states=[_failed()], limit=1)[0]
            finally:
                store.close()
            page.get_by_placeholder("paste a job id").fill(failed.id)
            page.get_by_placeholder("paste a job id").press("Enter")
            page.get_by_text("Traceback (most recent call last)").first.wait_for(timeout=30_000)
            _settle(page)
            _assert_no_errors(page, "Jobs (failed job opened)", traceback_allowed=True)
            code = page.locator('[data-testid="stCode"]').all_inner_texts()
            assert any("Traceback (most recent call last)" in block for block in code)
            _screenshot(page, console.screenshots, "job-detail")
            context.close()
        finally:
            browser.close()
    assert console.process.poll() is None, console.log_tail()
    assert "Traceback" not in console.log.read_text(errors="replace"), console.log_tail()


def test_live_refresh_and_a_rollout_change_through_the_dialog(console: Console) -> None:
    """What only a browser shows: the Overview refreshes itself, and moving the slider opens
    the confirmation dialog, whose reason lands in the audit log."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(console.url, wait_until="domcontentloaded")
            page.get_by_role("textbox", name="Your name").fill(OPERATOR)
            page.get_by_role("textbox", name="Your password").fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
            updated = page.get_by_text("refreshes every")
            updated.wait_for(timeout=30_000)
            first = updated.inner_text()
            page.wait_for_function(
                "text => ![...document.querySelectorAll('[data-testid=\"stCaptionContainer\"]')]"
                ".some(e => e.innerText === text)",
                arg=first,
                timeout=30_000,
            )  # the fragment ran again by itself

            page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Rollout").click()
            page.get_by_role("heading", name="Rollout").first.wait_for(timeout=30_000)
            _settle(page)
            page.get_by_role("slider").focus()
            page.keyboard.press("ArrowRight")  # one step: 50 % -> 55 %
            dialog = page.get_by_role("dialog")
            dialog.get_by_text("50 % → 55 %").wait_for(timeout=30_000)
            dialog.get_by_role("textbox").fill("browser test: one step up")
            dialog.get_by_role("button", name="Apply change").click()
            dialog.wait_for(state="detached", timeout=30_000)
            _settle(page)
            _assert_no_errors(page, "Rollout after a change")
        finally:
            browser.close()
    store = console.store()
    try:
        entry = store.audit_log(limit=1)[0]
    finally:
        store.close()
    assert (entry.actor, entry.reason) == (f"console:{OPERATOR}", "browser test: one step up")
    assert (entry.before["percentage"], entry.after["percentage"]) == (50, 55)


def _failed() -> object:
    from app.domain.jobs import JobState

    return JobState.FAILED


def test_console_refuses_to_start_without_a_login(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CONSOLE_PASSWORD"}
    env.update(DATA_DIR=str(tmp_path), HOME=str(tmp_path), CONSOLE_PORT=str(free_port()))
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "console"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "CONSOLE_PASSWORD is not set" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", int(env["CONSOLE_PORT"]))) != 0
