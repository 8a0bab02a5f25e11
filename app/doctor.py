"""`ai-broker doctor`: one line per dependency, and what to do about each failure."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx
import redis

from app.adapters.huey_queue import build_huey
from app.adapters.redis_intake import RedisIntake
from app.bootstrap import build_chatwoot, build_generator, build_store
from app.config import ConfigError, Settings
from app.store.psycopg_rpc import dsn_location

CHECK_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    required: bool
    detail: str

    def line(self) -> str:
        mark = "ok  " if self.ok else ("FAIL" if self.required else "warn")
        return f"[{mark}] {self.name:<9} {self.detail}"


def run_doctor(settings: Settings, *, out: Callable[[str], object] = sys.stdout.write) -> int:
    results = [
        _check("store", True, lambda: _store(settings)),
        _check("queue", True, lambda: _queue(settings)),
        _check("intake", False, lambda: _intake_durability(settings)),
        _check("chatwoot", True, lambda: _chatwoot(settings)),
        _check("openai", True, lambda: _openai(settings)),
        _check("webhooks", True, lambda: _webhook_auth(settings)),
        _check("n8n", False, lambda: _n8n(settings)),
        _check(
            "slack",
            False,
            lambda: _optional_url(settings.slack_webhook_url, "SLACK_WEBHOOK_URL", probe=False),
        ),
    ]
    for result in results:
        out(result.line() + "\n")
    failed = [r for r in results if r.required and not r.ok]
    out(f"{len(results) - len(failed)}/{len(results)} checks passed\n")
    return 1 if failed else 0


def _check(name: str, required: bool, probe: Callable[[], str]) -> CheckResult:
    try:
        return CheckResult(name, True, required, probe())
    except ConfigError as exc:
        return CheckResult(name, False, required, str(exc))
    except Exception as exc:  # noqa: BLE001 - every failure becomes one readable line
        return CheckResult(name, False, required, f"{type(exc).__name__}: {exc}"[:300])


def _store(settings: Settings) -> str:
    store = build_store(settings, pool_size=1)
    try:
        store.ping()
        now = time.time()
        # One of the atomic functions, read-only: proves they are installed and callable.
        store.reply_window_stats(since=now, now=now)
        brokers = store.list_brokers()
    finally:
        store.close()
    if not brokers:
        raise ConfigError("no brokers: run `ai-broker brokers seed`")
    if settings.uses_postgres and settings.database_url:
        where = f"PostgreSQL {dsn_location(settings.database_url)}"
    elif settings.uses_supabase and settings.supabase_url:
        where = f"Supabase {_without_credentials(settings.supabase_url)}"
    else:
        where = f"SQLite {settings.store_path}"
    return f"{where} (schema ok, functions ok, {len(brokers)} brokers)"


def _queue(settings: Settings) -> str:
    huey = build_huey(settings)
    pending = huey.pending_count()
    backend = (
        f"Redis {_without_credentials(settings.redis_url)}"
        if settings.redis_url
        else f"SQLite {settings.queue_path}"
    )
    return f"{backend} ({pending} pending)"


def _intake_durability(settings: Settings) -> str:
    """With Redis, an accepted message lives only in Redis until a worker records it, so Redis's
    fsync policy decides what a Redis crash can lose."""
    if not settings.redis_url:
        return "receivers record in the store (no REDIS_URL)"
    client = redis.Redis.from_url(
        settings.redis_url, socket_timeout=CHECK_TIMEOUT_S, socket_connect_timeout=CHECK_TIMEOUT_S
    )
    try:
        buffer = RedisIntake(client)
        backlog, rejected = buffer.depth(), buffer.rejected()
        persistence = _persistence(client)
    finally:
        client.close()
    problems = []
    if isinstance(persistence, str):
        problems.append(
            f"could not check Redis's persistence ({persistence}); verify by hand, in the Redis "
            "service's settings, that it persists append-only with fsync always (appendonly "
            "yes, appendfsync always), or a Redis crash can lose accepted messages"
        )
    elif persistence != ("yes", "always"):
        appendonly, appendfsync = persistence
        problems.append(
            f"Redis runs appendonly {appendonly}, appendfsync {appendfsync}: a Redis crash can "
            "lose accepted messages; set appendonly yes and appendfsync always"
        )
    if rejected:
        problems.append(
            f"{rejected} message(s) parked for an operator: see docs/runbook.md, Intake buffer"
        )
    where = f"{backlog} waiting, {rejected} parked"
    if problems:
        raise ConfigError(f"{'; '.join(problems)} ({where})")
    return f"Redis append-only, fsync always ({where})"


def _persistence(client: redis.Redis) -> tuple[str, str] | str:
    """Redis's (appendonly, appendfsync), or why they could not be read: managed services
    (ElastiCache, Upstash, Redis Cloud) refuse CONFIG, rename it away or deny it to the user."""
    try:
        config = {**client.config_get("appendonly"), **client.config_get("appendfsync")}
    except redis.ResponseError as exc:  # a NOPERM answer is a ResponseError too
        return f"CONFIG GET refused: {exc}"
    appendonly, appendfsync = config.get("appendonly"), config.get("appendfsync")
    if appendonly is None or appendfsync is None:
        return "CONFIG GET did not report appendonly and appendfsync"
    return appendonly, appendfsync


def _chatwoot(settings: Settings) -> str:
    settings.require_chatwoot()
    client = build_chatwoot(settings)
    assert client is not None
    client.ping()
    bot = "bot token set" if settings.chatwoot_bot_token else "no bot token (replies as the user)"
    return f"{settings.chatwoot_base_url} account {settings.chatwoot_account_id} ({bot})"


def _openai(settings: Settings) -> str:
    build_generator(settings).ping()
    return f"model {settings.openai_model} at {settings.openai_base_url or 'api.openai.com'}"


def _webhook_auth(settings: Settings) -> str:
    settings.require_webhook_auth()
    if settings.chatwoot_webhook_secret:
        return "HMAC signatures required (CHATWOOT_WEBHOOK_SECRET)"
    if settings.webhook_token:
        return "URL token required (WEBHOOK_TOKEN)"
    return "UNAUTHENTICATED (ALLOW_UNAUTHENTICATED_WEBHOOKS=true): local use only"


def _optional_url(url: str | None, variable: str, *, probe: bool = True) -> str:
    if not url:
        return f"not configured ({variable}; optional)"
    if probe:
        # Any HTTP answer proves the host is reachable; only a network failure is a failure.
        httpx.head(url, timeout=CHECK_TIMEOUT_S)
    return f"configured ({variable})"


def _n8n(settings: Settings) -> str:
    configured = _optional_url(settings.n8n_webhook_url, "N8N_AI_BROKER_WEBHOOK_URL")
    if settings.n8n_webhook_url and settings.n8n_sender is None:
        raise ConfigError(
            "configured (N8N_AI_BROKER_WEBHOOK_URL), but N8N_SENDER is missing: set it to the "
            "Chatwoot agent (user:<id>) or agent bot (agent_bot:<id>) the workflow posts with. "
            "Without it n8n's replies are told apart by the conversation's route, so a human's "
            "answer in an n8n conversation counts as n8n's"
        )
    if settings.n8n_sender is not None:
        return f"{configured}, replies from {settings.n8n_sender} (N8N_SENDER)"
    return configured


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
