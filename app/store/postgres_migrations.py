"""The Supabase store's schema: numbered SQL migrations shipped in app/store/migrations.

`migration_sql()` is the whole schema as one script (what `ai-broker db init` prints for the
Supabase SQL editor); `apply_migrations(dsn)` applies the files not applied yet over a direct
Postgres connection (Supabase's "connection string") in one transaction, and records them in
`schema_migrations`. Both are idempotent.
"""

from __future__ import annotations

import logging
import re
from importlib import resources

import psycopg

from app.store.base import StoreError

logger = logging.getLogger(__name__)

PACKAGE = "app.store.migrations"
SCHEMA_VERSION = "0009"  # the newest migration; the store refuses to run on an older schema
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# Any fixed number: concurrent `db init` runs (two deploys at once) take turns.
_ADVISORY_LOCK_KEY = 0x61692D62726F6B  # "ai-brok"

_BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


def migrations() -> list[tuple[str, str]]:
    """(version, SQL) of every migration file, oldest first."""
    found = []
    for entry in resources.files(PACKAGE).iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((match.group(1), entry.read_text(encoding="utf-8")))
    return sorted(found)


def migration_sql() -> str:
    """Every migration in order, each in its own transaction, ready for `psql` or the editor."""
    parts = [
        "-- ai-broker schema for Supabase/PostgreSQL, version "
        f"{SCHEMA_VERSION}. Safe to run again.\n"
    ]
    for version, sql in migrations():
        parts.append(f"-- migration {version}\nBEGIN;\n{sql.rstrip()}\nCOMMIT;\n")
    return "\n".join(parts)


def apply_migrations(dsn: str) -> list[str]:
    """Apply the migrations this database lacks; returns the versions applied (maybe none)."""
    try:
        with psycopg.connect(dsn, autocommit=True) as connection, connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_LOCK_KEY,))
            connection.execute(_BOOTSTRAP)
            applied = {
                row[0] for row in connection.execute("SELECT version FROM schema_migrations")
            }
            done = []
            for version, sql in migrations():
                if version in applied:
                    continue
                logger.info("applying store migration %s", version)
                with connection.transaction():
                    connection.execute(sql.encode())
                    connection.execute(
                        "INSERT INTO schema_migrations (version) VALUES (%s) "
                        "ON CONFLICT (version) DO NOTHING",
                        (version,),
                    )
                done.append(version)
            return done
    except psycopg.Error as exc:
        raise StoreError(f"could not apply the store migrations: {exc}") from exc
