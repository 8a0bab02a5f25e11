"""Production configuration: Redis (RedisHuey) and the PostgreSQL store, with two receiver
processes and two consumers, once per transport: psycopg on DATABASE_URL (a fresh database that
`ai-broker db init` migrates), and supabase-py over the PostgREST sandbox (SUPABASE_URL)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis

from app.sandbox.chatwoot import ChatwootSandbox
from app.sandbox.llm import LLMSandbox
from app.store.postgres_migrations import migrations
from tests.support.postgres import supabase_bed, temporary_database
from tests.support.redis_server import RedisServer
from tests.support.system import WEBHOOK_SECRET, RunningSystem, free_port, system_env

pytestmark = pytest.mark.e2e

ALL_MIGRATIONS = ", ".join(version for version, _ in migrations())


@dataclass
class Production:
    system: RunningSystem
    store: str  # "postgres" (DATABASE_URL) or "supabase" (SUPABASE_URL)
    dsn: str
    admin: psycopg.Connection[Any]
    setup: list[subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module", params=["postgres", "supabase"])
def production(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Production]:
    data_dir: Path = tmp_path_factory.mktemp(f"production-{request.param}")
    redis_server = RedisServer(data_dir / "redis")
    redis_server.start()
    port = free_port()
    with ExitStack() as stack:
        chatwoot = stack.enter_context(ChatwootSandbox(webhook_retry_wait_s=0.5))
        llm = stack.enter_context(LLMSandbox())
        if request.param == "postgres":
            dsn = stack.enter_context(temporary_database(migrated=False))
            store_env = {"DATABASE_URL": dsn}
        else:
            bed = stack.enter_context(supabase_bed(pool_size=24))
            dsn = bed.dsn
            store_env = {"SUPABASE_URL": bed.sandbox.url, "SUPABASE_SERVICE_ROLE_KEY": bed.key}
        chatwoot.add_webhook(
            f"http://127.0.0.1:{port}/webhooks/chatwoot", secret=WEBHOOK_SECRET, kind="agent_bot"
        )
        env = system_env(
            data_dir,
            port,
            chatwoot,
            llm,
            REDIS_URL=redis_server.url,
            RESPONSE_DELAY_SCALE="0.2",
            WEB_CONCURRENCY="2",
            WORKER_CONCURRENCY="16",
            **store_env,
        )
        setup = [_cli(["db", "init"], env)] if request.param == "postgres" else []
        setup.append(_cli(["brokers", "seed"], env))
        assert all(step.returncode == 0 for step in setup), [s.stderr for s in setup]
        admin = stack.enter_context(psycopg.connect(dsn, autocommit=True))
        system = RunningSystem(data_dir=data_dir, port=port, chatwoot=chatwoot, llm=llm, env=env)
        system.start("web", "worker")
        system.processes["worker-b"] = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker"],
            env=env,
            stdout=(data_dir / "worker-b.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        try:
            system.wait_ready()
            yield Production(system, request.param, dsn, admin, setup)
        finally:
            system.stop_all()
            redis_server.stop()


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_db_init_and_brokers_seed_set_up_a_fresh_database(production: Production) -> None:
    if production.store != "postgres":
        pytest.skip("the REST transport cannot create a schema; its bed is migrated")
    init, seed = production.setup
    assert f"migrations applied: {ALL_MIGRATIONS}" in init.stdout, init.stdout + init.stderr
    assert "schema ready in PostgreSQL (DATABASE_URL)" in init.stdout
    assert "5 broker(s) added" in seed.stdout
    again = _cli(["db", "init"], production.system.env)
    assert "none (up to date)" in again.stdout


def test_replies_flow_once_on_redis_and_postgres(production: Production) -> None:
    system = production.system
    conversations = [system.new_conversation() for _ in range(20)]
    for conversation_id in conversations:
        system.chatwoot.customer_message(conversation_id, "What's the current SORA-based rate?")
    for conversation_id in conversations:
        system.wait_for_replies(conversation_id, timeout=40)
    system.settle(2.0)
    assert all(len(system.broker_messages(c)) == 1 for c in conversations)
    with production.admin.cursor() as cursor:
        cursor.execute("SELECT state, count(*) FROM reply_jobs GROUP BY state")
        states = dict(cursor.fetchall())
        cursor.execute("SELECT max(current_workload), min(current_workload) FROM ai_brokers")
        highest, lowest = cursor.fetchone()
    assert states == {"sent": 20}
    assert (highest, lowest) == (0, 0)  # every job released its capacity
    workers = httpx.get(f"{system.url}/readyz", timeout=5).json()["checks"]["workers"]
    assert workers.startswith("2 alive")


def test_doctor_checks_redis_and_the_store(production: Production) -> None:
    system = production.system
    result = _cli(["doctor"], system.env)
    assert result.returncode == 0, result.stdout + result.stderr
    where = "PostgreSQL 127.0.0.1:5432/ai_broker_" if production.store == "postgres" else "Supabase"
    assert re.search(
        rf"^\[ok  \] store\s+{where}.*functions ok, 5 brokers", result.stdout, re.MULTILINE
    ), result.stdout
    assert re.search(r"^\[ok  \] queue\s+Redis redis://127\.0\.0\.1:\d+/0", result.stdout, re.M)
    assert re.search(r"^\[ok  \] intake\s+Redis append-only, fsync always", result.stdout, re.M)

    # Redis's default policy (fsync once a second) can lose a second of accepted messages.
    own_redis = redis.Redis.from_url(system.env["REDIS_URL"])
    own_redis.config_set("appendfsync", "everysec")
    try:
        relaxed = _cli(["doctor"], system.env)
    finally:
        own_redis.config_set("appendfsync", "always")
        own_redis.close()
    assert relaxed.returncode == 0
    warning = r"^\[warn\] intake\s+Redis runs appendonly yes, appendfsync everysec: a Redis crash"
    assert re.search(warning, relaxed.stdout, re.M), relaxed.stdout

    if production.store == "supabase":
        broken_env = {**system.env, "SUPABASE_SERVICE_ROLE_KEY": "not-the-key"}
        complaint = r"SUPABASE_SERVICE_ROLE_KEY"
    else:
        broken_env = {**system.env, "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none"}
        complaint = r"PostgreSQL \(127\.0\.0\.1:1/none\) is unreachable"
    broken = _cli(["doctor"], broken_env)
    assert broken.returncode == 1
    assert re.search(rf"^\[FAIL\] store\b.*{complaint}", broken.stdout, re.M), broken.stdout


def test_db_init_prints_or_applies_the_migration(production: Production) -> None:
    if production.store != "supabase":
        pytest.skip("printing the SQL is for the REST transport")
    system = production.system
    printed = _cli(["db", "init"], system.env)
    assert printed.returncode == 0
    assert "CREATE TABLE" in printed.stdout and "ai_broker_claim_job" in printed.stdout
    with temporary_database(migrated=False) as dsn:
        first = _cli(["db", "init", "--dsn", dsn], system.env)
        second = _cli(["db", "init", "--dsn", dsn], system.env)
    assert f"migrations applied: {ALL_MIGRATIONS}" in first.stdout, first.stdout + first.stderr
    assert "none (up to date)" in second.stdout
