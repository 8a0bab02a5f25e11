"""The PostgreSQL store's test bed: a throwaway PostgreSQL database with the migrations applied,
reached directly over psycopg, and through the PostgREST sandbox with the real supabase-py
client.

Every database is `ai_broker_<random>` on the local server ($AI_BROKER_TEST_POSTGRES, default
postgresql://postgres@127.0.0.1:5432/postgres) and is dropped afterwards. Without a server the
tests skip, except under CI (CI=true), where a missing server is a failure.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import ssl
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from functools import cache
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql
from supabase import Client, ClientOptions, create_client

from app.sandbox.postgrest import PostgrestSandbox
from app.store.postgres import LeaseClock, PostgresStore
from app.store.postgres_migrations import apply_migrations
from app.store.psycopg_rpc import create_postgres_rpc
from app.store.supabase import PostgrestRpc

ADMIN_DSN = os.environ.get(
    "AI_BROKER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
SERVICE_ROLE = "service_role"
JWT_SECRET = "ai-broker-test-jwt-secret-with-at-least-32-characters"
# Every table the migrations create, but their own bookkeeping; referencing tables first.
DATA_TABLES = (
    "broker_conversations",
    "ai_brokers",
    "reply_jobs",
    "webhook_deliveries",
    "send_windows",
    "worker_heartbeats",
    "metric_counters",
    "rollout_state",
    "rollout_audit",
    "shadow_comparisons",
    "circuit_breakers",
    "broker_samples",
    "operator_actions",
)


def require_postgres() -> None:
    """Skip the calling test when no PostgreSQL server answers (fail instead under CI)."""
    try:
        with psycopg.connect(ADMIN_DSN, connect_timeout=3):
            pass
    except psycopg.OperationalError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no PostgreSQL server at {ADMIN_DSN}: {exc}")


def dsn_for(database: str) -> str:
    """The admin DSN pointed at another database on the same server."""
    return psycopg.conninfo.make_conninfo(ADMIN_DSN, dbname=database)


def service_key(secret: str = JWT_SECRET, role: str = SERVICE_ROLE) -> str:
    """A service-role key shaped like Supabase's: an HS256 JWT with the role claim."""

    def encode(part: bytes) -> str:
        return base64.urlsafe_b64encode(part).rstrip(b"=").decode()

    now = int(time.time())
    header = encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = encode(
        json.dumps({"iss": "supabase", "role": role, "iat": now, "exp": now + 3600}).encode()
    )
    signature = hmac.new(secret.encode(), f"{header}.{claims}".encode(), hashlib.sha256)
    return f"{header}.{claims}.{encode(signature.digest())}"


def ensure_service_role() -> None:
    """Supabase's service_role, so the migration's grants and the sandbox's role are real.

    Roles belong to the whole server; it is created once and left there, like Supabase's.
    """
    # DuplicateObject: another test run created it at the same moment.
    with (
        psycopg.connect(ADMIN_DSN, autocommit=True) as connection,
        suppress(psycopg.errors.DuplicateObject),
    ):
        connection.execute(
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = "
            "'service_role') THEN CREATE ROLE service_role NOLOGIN BYPASSRLS; END IF; END $$"
        )


@contextmanager
def temporary_database(*, migrated: bool = True) -> Iterator[str]:
    """A fresh database (its DSN), migrated unless asked not to; dropped afterwards."""
    require_postgres()
    name = f"ai_broker_{secrets.token_hex(6)}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        if migrated:
            ensure_service_role()
            apply_migrations(dsn_for(name))
        yield dsn_for(name)
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextmanager
def database_from_template(template_dsn: str) -> Iterator[str]:
    """A copy of the database at `template_dsn` (nobody may be connected to it), dropped after."""
    template = psycopg.conninfo.conninfo_to_dict(template_dsn)["dbname"]
    name = f"ai_broker_{secrets.token_hex(6)}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(str(template))
            )
        )
    try:
        yield dsn_for(name)
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


_RESTART_IDENTITIES = """
SELECT setval(pg_get_serial_sequence(format('%I', c.relname), a.attname), 1, false)
  FROM pg_attribute AS a
  JOIN pg_class AS c ON c.oid = a.attrelid
  JOIN pg_namespace AS n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public' AND a.attidentity <> ''
"""


def empty(connection: psycopg.Connection[Any]) -> None:
    """Empty every data table (schema and version rows stay), identities from 1 again.

    DELETE, not TRUNCATE: on tables this small it is ten times faster (no new files)."""
    with connection.transaction():
        for table in DATA_TABLES:
            connection.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table)))
        connection.execute(_RESTART_IDENTITIES)


@dataclass
class SupabaseBed:
    """A migrated database behind a running PostgREST sandbox."""

    dsn: str
    sandbox: PostgrestSandbox
    key: str
    admin: psycopg.Connection[Any]

    def client(self) -> Client:
        # One TLS context for every client: building one reads the CA bundle (~20 ms), which
        # adds up over a few hundred tests, and the sandbox speaks plain HTTP anyway.
        http = httpx.Client(timeout=10.0, verify=_tls_context())
        return create_client(self.sandbox.url, self.key, ClientOptions(httpx_client=http))

    def store(self, *, lease_clock: LeaseClock = LeaseClock.CALLER) -> PostgresStore:
        """The store over the REST transport: supabase-py -> the sandbox -> PostgreSQL. Its
        leases run on the caller's clock unless asked otherwise, so tests drive time by hand
        as on SQLite."""
        return PostgresStore(PostgrestRpc(self.client()), lease_clock=lease_clock)

    def direct_store(
        self, *, pool_size: int = 4, lease_clock: LeaseClock = LeaseClock.CALLER
    ) -> PostgresStore:
        """The store over psycopg, on the same database."""
        return PostgresStore(
            create_postgres_rpc(self.dsn, pool_size=pool_size), lease_clock=lease_clock
        )

    def reset(self) -> None:
        empty(self.admin)
        self.sandbox.faults.reset()


@cache
def _tls_context() -> ssl.SSLContext:
    return ssl.create_default_context()


@contextmanager
def supabase_bed(*, pool_size: int = 10) -> Iterator[SupabaseBed]:
    """A temporary database, migrated, served by a PostgREST sandbox as service_role."""
    key = service_key()
    with temporary_database() as dsn:
        sandbox = PostgrestSandbox(dsn, service_key=key, db_role=SERVICE_ROLE, pool_size=pool_size)
        with sandbox, psycopg.connect(dsn, autocommit=True) as admin:
            yield SupabaseBed(dsn, sandbox, key, admin)


_SHARED: dict[str, SupabaseBed] = {}


def shared_supabase_bed(config: pytest.Config) -> SupabaseBed:
    """One bed for the whole test run, started on first use and stopped when the run ends.

    Contract tests in several modules share it (reset() between tests), without needing a
    fixture of their own: the store fixture is imported into other modules by name.
    """
    if "bed" not in _SHARED:
        stack = ExitStack()
        _SHARED["bed"] = stack.enter_context(supabase_bed())

        def stop() -> None:
            _SHARED.clear()
            stack.close()

        config.add_cleanup(stop)
    return _SHARED["bed"]
