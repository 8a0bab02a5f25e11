"""How fast each console page renders over a production-sized store.

Seeds a store with 100,000 ledger rows over 24 h and 10,000 shadow comparisons (console/seed.py),
then measures every page:

- server side with AppTest (the whole script run: SQL, pandas, plotly figures), cold (the
  aggregate caches just cleared, as after an action or at the end of a TTL) and warm (cached);
- in a real browser (`--browser`: Debian chromium through Playwright against `ai-broker console`
  as a real process): from the click on the page's link to the page settled with its charts
  drawn;
- and each analytics query on its own.

    python bench/console_bench.py [--runs 5] [--browser] [--store sqlite|postgres]
        [--data-dir DIR] [--json FILE]

`--store postgres` copies the seeded rows into a migrated temporary database on the local
PostgreSQL (tests/support/postgres.py) and runs the console on it over DATABASE_URL.

The target is under 1.5 s per page. It is a benchmark, not a test: it prints the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import streamlit as st  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from app.bootstrap import build_analytics, build_store  # noqa: E402
from app.config import Settings  # noqa: E402
from app.store.analytics import Buckets, ComparisonFilter, JobFilter  # noqa: E402
from console import auth  # noqa: E402
from console.seed import SeedPlan, seed_store  # noqa: E402

PAGES = ("overview", "brokers", "compare", "rollout", "jobs")
TITLES = {
    "overview": "Overview",
    "brokers": "Brokers",
    "compare": "Compare",
    "rollout": "Rollout",
    "jobs": "Jobs",
}
CHARTS = {"overview": 3, "brokers": 2, "compare": 2, "rollout": 1, "jobs": 0}
TARGET_S = 1.5
PASSWORD = "bench-password"
MAIN = REPO / "console" / "main.py"


def seed(data_dir: Path) -> dict[str, Any]:
    store = data_dir / "store.db"
    if store.exists():
        print(f"reusing the seeded store in {store}")
        return {}
    started = time.perf_counter()
    summary = seed_store(store, SeedPlan())
    print(
        f"seeded {summary.jobs:,} ledger rows, {summary.comparisons:,} comparisons, "
        f"{summary.conversations:,} conversations in {time.perf_counter() - started:.1f} s"
    )
    return {"jobs": summary.jobs, "comparisons": summary.comparisons}


def apptest_pages(runs: int) -> dict[str, dict[str, float]]:
    operator = auth.Operator("bench", None, auth.AccessMethod.PASSWORD)
    app = AppTest.from_file(str(MAIN), default_timeout=60)
    app.session_state[auth.SESSION_KEY] = operator
    app.run()  # imports, the backend (store, queue, rollout) opened once
    results: dict[str, dict[str, float]] = {}
    for page in PAGES:
        app.switch_page(f"views/{page}.py").run()
        cold, warm = [], []
        for _ in range(runs):
            st.cache_data.clear()
            cold.append(_timed(app.run))
            warm.append(_timed(app.run))
        failures = [e.value for e in app.exception]
        if failures:
            raise SystemExit(f"{page}: {failures}")
        results[page] = _summary(cold, warm)
    return results


def browser_pages(data_dir: Path, runs: int) -> dict[str, dict[str, float]]:
    from playwright.sync_api import sync_playwright

    port = 8599
    env = {
        **os.environ,
        "DATA_DIR": str(data_dir),
        "CONSOLE_PORT": str(port),
        "CONSOLE_PASSWORD": PASSWORD,
        "HOST": "127.0.0.1",
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from app.config import Settings; "
            "from app.console_cli import run_console; run_console(Settings.from_env())",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    results: dict[str, dict[str, float]] = {}
    try:
        _wait_for(f"http://127.0.0.1:{port}/_stcore/health")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path="/usr/bin/chromium",
                args=[
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                ],
            )
            page = browser.new_page(viewport={"width": 1680, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}")
            page.get_by_role("textbox", name="Your name").fill("bench")
            page.get_by_role("textbox", name="Console password").fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
            page.get_by_role("heading", name="Overview").wait_for(timeout=60_000)
            for name in PAGES:
                times = []
                for attempt in range(runs + 1):
                    other = "jobs" if name != "jobs" else "rollout"
                    _open(page, other)
                    started = time.perf_counter()
                    _open(page, name)
                    if attempt:  # the first visit warms this page's caches
                        times.append(time.perf_counter() - started)
                results[name] = {"median_s": statistics.median(times), "max_s": max(times)}
            browser.close()
    finally:
        process.terminate()
        process.wait(timeout=15)
    return results


def _open(page: Any, name: str) -> None:
    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=TITLES[name]).click()
    page.get_by_role("heading", name=TITLES[name]).first.wait_for(timeout=60_000)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=60_000
    )
    if CHARTS[name]:
        page.wait_for_function(
            "n => document.querySelectorAll('.js-plotly-plot .main-svg').length >= n",
            arg=CHARTS[name],
            timeout=60_000,
        )


def queries(runs: int) -> dict[str, float]:
    """Each analytics query on the store the environment names."""
    settings = Settings.from_env()
    store = build_store(settings, pool_size=1)
    analytics = build_analytics(settings, store)
    now = time.time()
    day = Buckets.ending_at(now, span_s=86400, size_s=900)
    calls: dict[str, Callable[[], object]] = {
        "state_counts": analytics.state_counts,
        "overdue": lambda: analytics.overdue(now=now),
        "outcomes 24h/15min": lambda: analytics.outcomes(day),
        "latencies 24h/15min (p50, p95)": lambda: analytics.latencies(day),
        "window_stats 1h": lambda: analytics.window_stats(since=now - 3600, until=now),
        "traffic 24h/15min": lambda: analytics.traffic(day),
        "broker_activity 24h": lambda: analytics.broker_activity(since=now - 86400, until=now),
        "broker_replies 24h": lambda: analytics.broker_replies(day),
        "workload_history 24h": lambda: analytics.workload_history(since=now - 86400),
        "search_jobs 24h page 1": lambda: analytics.search_jobs(JobFilter(since=now - 86400)),
        "search_jobs text": lambda: analytics.search_jobs(JobFilter(text="bridging loan")),
        "comparison_summary": lambda: analytics.comparison_summary(ComparisonFilter()),
        "comparisons page 1": lambda: analytics.comparisons(ComparisonFilter(), limit=5),
        "export_comparisons (CSV rows)": lambda: analytics.export_comparisons(ComparisonFilter()),
    }
    try:
        return {
            name: statistics.median(_timed(call) for _ in range(runs))
            for name, call in calls.items()
        }
    finally:
        analytics.close()
        store.close()


def _timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def _summary(cold: list[float], warm: list[float]) -> dict[str, float]:
    return {
        "cold_median_s": statistics.median(cold),
        "cold_max_s": max(cold),
        "warm_median_s": statistics.median(warm),
        "warm_max_s": max(warm),
    }


def _wait_for(url: str, timeout: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).text == "ok":
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"the console did not answer on {url}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--browser", action="store_true", help="also time pages in chromium")
    parser.add_argument("--data-dir", type=Path, default=None, help="reuse a seeded store")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument(
        "--store",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="the store the console reads: the seeded SQLite file, or the same rows on PostgreSQL",
    )
    args = parser.parse_args()
    with ExitStack() as stack:
        return run(args, stack)


def run(args: argparse.Namespace, stack: ExitStack) -> int:

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="console-bench-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    os.environ.update(DATA_DIR=str(data_dir), CONSOLE_PASSWORD=PASSWORD)
    for name in ("N8N_AI_BROKER_WEBHOOK_URL", "SUPABASE_URL", "REDIS_URL", "DATABASE_URL"):
        os.environ.pop(name, None)
    report: dict[str, Any] = {
        "seed": seed(data_dir),
        "target_s": TARGET_S,
        "store": args.store,
    }
    if args.store == "postgres":
        from tests.support.postgres import temporary_database
        from tests.support.store_copy import copy_sqlite_store

        dsn = stack.enter_context(temporary_database())
        started = time.perf_counter()
        copied = copy_sqlite_store(data_dir / "store.db", dsn)
        print(
            f"copied {sum(copied.values()):,} rows to PostgreSQL in "
            f"{time.perf_counter() - started:.1f} s"
        )
        os.environ["DATABASE_URL"] = dsn

    report["queries_s"] = queries(args.runs)
    print("\nanalytics queries (median of", args.runs, "runs)")
    for name, seconds in report["queries_s"].items():
        print(f"  {name:34} {seconds * 1000:7.1f} ms")

    report["apptest"] = apptest_pages(args.runs)
    print("\npages, server side (AppTest script run; cold = aggregate caches cleared)")
    print(
        f"  {'page':10} {'cold median':>12} {'cold max':>10} {'warm median':>12} {'warm max':>10}"
    )
    for page, figures in report["apptest"].items():
        flag = "" if figures["cold_max_s"] < TARGET_S else "  <-- over target"
        print(
            f"  {page:10} {figures['cold_median_s']:11.3f}s {figures['cold_max_s']:9.3f}s "
            f"{figures['warm_median_s']:11.3f}s {figures['warm_max_s']:9.3f}s{flag}"
        )

    if args.browser:
        report["browser"] = browser_pages(data_dir, args.runs)
        print("\npages in chromium (click on the link → page settled, charts drawn)")
        for page, figures in report["browser"].items():
            flag = "" if figures["max_s"] < TARGET_S else "  <-- over target"
            print(
                f"  {page:10} median {figures['median_s']:.3f}s  max {figures['max_s']:.3f}s{flag}"
            )

    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
        print(f"\nwritten to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
