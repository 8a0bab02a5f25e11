"""The one place that wires adapters from configuration.

Entry points (receiver, worker, CLI) call `build_services`; tests pass their own Settings (or
swap any field of the returned Services) instead of patching modules.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx
import redis

from app.adapters.chatwoot import ChatwootClient
from app.adapters.chatwoot_gateway import ChatwootGateway
from app.adapters.http_pool import PooledHttp
from app.adapters.huey_queue import HueyJobQueue, build_huey, build_redis_pool
from app.adapters.n8n import N8nClient
from app.adapters.redis_intake import RedisIntake
from app.adapters.slack import LogNotifier, SlackNotifier
from app.config import ConfigError, Settings, initial_rollout
from app.domain.personas import PERSONAS
from app.domain.reply_plan import ReplyPlanner
from app.domain.webhook_auth import WebhookAuth
from app.ports.chatwoot import Chatwoot
from app.services.counters import BufferedCounters
from app.services.forwarding import N8N_CIRCUIT, CircuitBreaker, N8nForwarder
from app.services.intake import WebhookIntake
from app.services.leads import LeadIntake
from app.services.operations import Operations
from app.services.rollout import RolloutService
from app.store.analytics import Analytics, SqliteAnalytics
from app.store.analytics_postgres import PostgresAnalytics
from app.store.base import Store
from app.store.postgres import PostgresStore
from app.store.psycopg_rpc import create_postgres_rpc
from app.store.sqlite import SqliteStore
from app.store.supabase import create_supabase_store

if TYPE_CHECKING:
    from app.adapters.llm import OpenAIReplyGenerator
    from app.services.pipeline import ReplyPipeline

DEFAULT_BROKER_CAPACITY = 100
# Idle connections the openai SDK's client keeps. httpcore checks every pooled connection on
# every request (a readability poll each, and a scan that grows with the square of the pool),
# which with a pool as large as the greenlet count cost a worker a third of its CPU. Bursts
# beyond this open (and then close) extra connections, up to the pool's maximum.
KEEPALIVE_CONNECTIONS = 16


def build_store(settings: Settings, *, pool_size: int | None = None) -> Store:
    if settings.database_url:
        rpc = create_postgres_rpc(
            settings.database_url,
            pool_size=pool_size or settings.database_pool_size,
            transaction_mode=None
            if settings.database_pool_mode is None
            else settings.database_pool_mode == "transaction",
        )
        return PostgresStore(rpc)
    if settings.uses_supabase:
        assert settings.supabase_url and settings.supabase_service_role_key
        return create_supabase_store(settings.supabase_url, settings.supabase_service_role_key)
    return SqliteStore(settings.store_path)


def build_analytics(settings: Settings, store: Store) -> Analytics:
    """The console's aggregate queries, on the same database as `store` (and, on PostgreSQL,
    the same connections)."""
    if isinstance(store, PostgresStore):
        return PostgresAnalytics(store.transport)
    return SqliteAnalytics(settings.store_path)


def prepare_store(store: Store) -> None:
    """Make the store ready and the five brokers present. SQLite creates its schema here (the
    embedded default needs no set-up); PostgreSQL only checks it (`ai-broker db init` applies
    the migrations)."""
    store.init_schema()
    store.seed_brokers(PERSONAS, max_concurrent_chats=DEFAULT_BROKER_CAPACITY)


def build_chatwoot(settings: Settings, *, pool_size: int = 20) -> ChatwootClient | None:
    if not settings.chatwoot_configured:
        return None
    assert settings.chatwoot_base_url and settings.chatwoot_account_id
    assert settings.chatwoot_api_token
    http = PooledHttp(
        settings.chatwoot_base_url,
        timeout_s=settings.chatwoot_timeout_s,
        connect_timeout_s=min(5.0, settings.chatwoot_timeout_s),
        # urllib3 looks only at the connection it hands out, so idle ones cost nothing.
        max_idle=pool_size,
    )
    return ChatwootClient(
        http,
        base_url=settings.chatwoot_base_url,
        account_id=settings.chatwoot_account_id,
        api_token=settings.chatwoot_api_token,
        bot_token=settings.chatwoot_bot_token,
    )


def build_generator(settings: Settings) -> OpenAIReplyGenerator:
    # Imported here: only workers need the openai SDK (about 20 MB per process).
    import httpx2  # the HTTP library the openai SDK runs on
    import openai

    from app.adapters.llm import OpenAIReplyGenerator

    if not settings.openai_api_key:
        raise ConfigError("OPENAI_API_KEY is not set: the worker needs it to write replies")
    client = openai.OpenAI(
        api_key=settings.openai_api_key,
        base_url=settings.openai_base_url,
        # The pipeline retries whole jobs; SDK retries would only stretch the worst case.
        max_retries=0,
        timeout=settings.llm_timeout_s,
        http_client=openai.DefaultHttpxClient(
            limits=httpx2.Limits(
                max_connections=settings.worker_concurrency + 8,
                max_keepalive_connections=KEEPALIVE_CONNECTIONS,
            )
        ),
    )
    # No temperature: gpt-5 models accept only their default and answer 400 to any other.
    return OpenAIReplyGenerator(
        client, model=settings.openai_model, timeout_s=settings.llm_timeout_s, temperature=None
    )


def build_forwarder(settings: Settings, store: Store) -> N8nForwarder | None:
    if not settings.n8n_webhook_url:
        return None
    http = httpx.Client(timeout=httpx.Timeout(settings.n8n_timeout_s, connect=1.0))
    client = N8nClient(http, url=settings.n8n_webhook_url)
    breaker = CircuitBreaker(store, N8N_CIRCUIT, cooldown_s=settings.n8n_circuit_cooldown_s)
    return N8nForwarder(client, breaker)


def build_notifier(settings: Settings) -> SlackNotifier | LogNotifier:
    if not settings.slack_webhook_url:
        return LogNotifier()
    return SlackNotifier(httpx.Client(timeout=5.0), url=settings.slack_webhook_url)


@dataclass
class Services:
    settings: Settings
    store: Store
    analytics: Analytics
    queue: HueyJobQueue
    webhook_auth: WebhookAuth
    intake: WebhookIntake
    counters: BufferedCounters
    rollout: RolloutService
    forwarder: N8nForwarder | None
    chatwoot: Chatwoot | None
    leads: LeadIntake | None
    operations: Operations
    intake_buffer: RedisIntake | None = None
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    _pipeline: ReplyPipeline | None = None

    def pipeline(self) -> ReplyPipeline:
        """The reply pipeline, built on first use (only worker processes need the LLM)."""
        if self._pipeline is None:
            from app.services.pipeline import PipelineSettings, ReplyPipeline

            self.settings.require_chatwoot()
            assert self.chatwoot is not None
            self._pipeline = ReplyPipeline(
                store=self.store,
                chatwoot=self.chatwoot,
                generator=build_generator(self.settings),
                queue=self.queue,
                rollout=self.rollout,
                settings=PipelineSettings(
                    response_delay_scale=self.settings.response_delay_scale,
                    send_rate_per_s=self.settings.queue_rate_limit,
                    lease_s=self.settings.job_lease_s,
                ),
                worker_id=f"{self.worker_id}:{uuid.uuid4().hex[:6]}",
            )
        return self._pipeline


def build_services(settings: Settings, *, worker: bool = False) -> Services:
    store = build_store(settings)
    pool = settings.worker_concurrency + 8 if worker else 20
    client = build_chatwoot(settings, pool_size=pool)
    chatwoot = ChatwootGateway(client) if client is not None else None
    services: Services

    def pipeline() -> ReplyPipeline:
        # Bound late: only a worker process ever runs a task and builds the pipeline.
        return services.pipeline()

    buffer = None
    if settings.redis_url:
        redis_pool = build_redis_pool(settings)
        buffer = RedisIntake(redis.Redis(connection_pool=redis_pool))
        queue = HueyJobQueue(build_huey(settings, redis_pool), pipeline, intake=buffer)
    else:
        queue = HueyJobQueue(build_huey(settings), pipeline)
    forwarder = build_forwarder(settings, store)
    counters = BufferedCounters(store)
    rollout = RolloutService(
        store, initial=initial_rollout(settings), forwarder=forwarder, queue=queue
    )
    leads = (
        LeadIntake(store, queue, chatwoot, inbox_id=settings.chatwoot_inbox_id)
        if chatwoot is not None and settings.chatwoot_inbox_id is not None
        else None
    )
    analytics = build_analytics(settings, store)
    operations = Operations(
        store=store, analytics=analytics, queue=queue, rollout=rollout, intake_buffer=buffer
    )
    services = Services(
        settings=settings,
        store=store,
        analytics=analytics,
        queue=queue,
        webhook_auth=WebhookAuth(
            secret=settings.chatwoot_webhook_secret,
            token=settings.webhook_token,
            allow_unauthenticated=settings.allow_unauthenticated_webhooks,
        ),
        intake=WebhookIntake(
            store,
            queue,
            rollout,
            forwarder,
            counters,
            planner=ReplyPlanner(scale=settings.response_delay_scale),
            buffer=buffer,
            n8n_sender=settings.n8n_sender,
        ),
        counters=counters,
        rollout=rollout,
        forwarder=forwarder,
        chatwoot=chatwoot,
        leads=leads,
        operations=operations,
        intake_buffer=buffer,
    )
    return services
