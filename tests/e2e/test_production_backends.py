"""Production configuration: Redis (RedisHuey) and Supabase (supabase-py over the PostgREST
sandbox on this machine's PostgreSQL), with two receiver processes and two consumers."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from app.sandbox.chatwoot import ChatwootSandbox
from app.sandbox.llm import LLMSandbox
from tests.support.postgres import SupabaseBed, supabase_bed, temporary_database
from tests.support.redis_server import RedisServer
from tests.support.system import WEBHOOK_SECRET, RunningSystem, free_port, system_env

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def production(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RunningSystem, SupabaseBed]]:
    data_dir: Path = tmp_path_factory.mktemp("production")
    redis_server = RedisServer(data_dir / "redis")
    redis_server.start()
    port = free_port()
    with (
        supabase_bed(pool_size=24) as bed,
        ChatwootSandbox(webhook_retry_wait_s=0.5) as chatwoot,
        LLMSandbox() as llm,
    ):
        chatwoot.add_webhook(
            f"http://127.0.0.1:{port}/webhooks/chatwoot", secret=WEBHOOK_SECRET, kind="agent_bot"
        )
        env = system_env(
            data_dir,
            port,
            chatwoot,
            llm,
            REDIS_URL=redis_server.url,
            SUPABASE_URL=bed.sandbox.url,
            SUPABASE_SERVICE_ROLE_KEY=bed.key,
            RESPONSE_DELAY_SCALE="0.2",
            WEB_CONCURRENCY="2",
            WORKER_CONCURRENCY="16",
        )
        system = RunningSystem(data_dir=data_dir, port=port, chatwoot=chatwoot, llm=llm, env=env)
        assert _cli(["brokers", "seed"], env).returncode == 0
        system.start("web", "worker")
        system.processes["worker-b"] = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker"],
            env=env,
            stdout=(data_dir / "worker-b.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        try:
            system.wait_ready()
            yield system, bed
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


def test_replies_flow_once_on_redis_and_supabase(
    production: tuple[RunningSystem, SupabaseBed],
) -> None:
    system, bed = production
    conversations = [system.new_conversation() for _ in range(20)]
    for conversation_id in conversations:
        system.chatwoot.customer_message(conversation_id, "What's the current SORA-based rate?")
    for conversation_id in conversations:
        system.wait_for_replies(conversation_id, timeout=40)
    system.settle(2.0)
    assert all(len(system.broker_messages(c)) == 1 for c in conversations)
    with bed.admin.cursor() as cursor:
        cursor.execute("SELECT state, count(*) FROM reply_jobs GROUP BY state")
        states = dict(cursor.fetchall())
        cursor.execute("SELECT max(current_workload), min(current_workload) FROM ai_brokers")
        highest, lowest = cursor.fetchone()
    assert states == {"sent": 20}
    assert (highest, lowest) == (0, 0)  # every job released its capacity
    workers = httpx.get(f"{system.url}/readyz", timeout=5).json()["checks"]["workers"]
    assert workers.startswith("2 alive")


def test_doctor_checks_redis_and_supabase(production: tuple[RunningSystem, SupabaseBed]) -> None:
    system, _ = production
    result = _cli(["doctor"], system.env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^\[ok  \] store\s+Supabase .*functions ok", result.stdout, re.MULTILINE)
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

    broken = _cli(["doctor"], {**system.env, "SUPABASE_SERVICE_ROLE_KEY": "not-the-key"})
    assert broken.returncode == 1
    assert re.search(r"^\[FAIL\] store\b.*SUPABASE_SERVICE_ROLE_KEY", broken.stdout, re.M), (
        broken.stdout
    )


def test_db_init_prints_or_applies_the_migration(
    production: tuple[RunningSystem, SupabaseBed],
) -> None:
    system, _ = production
    printed = _cli(["db", "init"], system.env)
    assert printed.returncode == 0
    assert "CREATE TABLE" in printed.stdout and "ai_broker_claim_job" in printed.stdout
    with temporary_database(migrated=False) as dsn:
        first = _cli(["db", "init", "--dsn", dsn], system.env)
        second = _cli(["db", "init", "--dsn", dsn], system.env)
    assert "migrations applied: 0001" in first.stdout, first.stdout + first.stderr
    assert "none (up to date)" in second.stdout
