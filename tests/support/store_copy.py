"""Copy an SQLite store into a migrated PostgreSQL database, row for row.

The console's seeded day (console/seed.py) is written straight into SQLite; the console tests
and the console benchmark run the same day on PostgreSQL by copying it, so both stores hold the
same rows (the logical schema is one). Booleans and JSON columns are converted by the target
column's type; identities (ai_brokers.seq is SQLite's rowid) keep their values.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

# Referenced tables first.
TABLES = (
    "ai_brokers",
    "broker_conversations",
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


def copy_sqlite_store(sqlite_path: Path, dsn: str) -> dict[str, int]:
    """Rows copied per table, into an empty, migrated database at `dsn`."""
    source = sqlite3.connect(sqlite_path)
    source.row_factory = sqlite3.Row
    copied: dict[str, int] = {}
    try:
        with psycopg.connect(dsn) as target, target.transaction():
            for table in TABLES:
                copied[table] = _copy_table(source, target, table)
            _restart_identities(target)
            # Planner statistics, as autovacuum would gather them soon after a bulk load.
            target.execute("ANALYZE")
    finally:
        source.close()
    return copied


def _copy_table(source: sqlite3.Connection, target: psycopg.Connection[Any], table: str) -> int:
    types = dict(
        target.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name = %s",
            (table,),
        ).fetchall()
    )
    select = "SELECT rowid AS seq, * FROM ai_brokers" if table == "ai_brokers" else None
    cursor = source.execute(select or f"SELECT * FROM {table}")
    columns = [d[0] for d in cursor.description if d[0] in types]
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    count = 0
    with target.cursor() as out, out.copy(statement) as copy:
        for row in cursor:
            copy.write_row([_value(row[c], types[c]) for c in columns])
            count += 1
    return count


def _value(value: Any, data_type: str) -> Any:
    if value is None:
        return None
    if data_type == "boolean":
        return bool(value)
    if data_type in ("json", "jsonb"):
        return json.dumps(json.loads(value))
    return value


def _restart_identities(target: psycopg.Connection[Any]) -> None:
    """Identity sequences past the copied values, so new rows get fresh ids."""
    identities = target.execute(
        "SELECT c.relname, a.attname FROM pg_attribute AS a "
        "JOIN pg_class AS c ON c.oid = a.attrelid "
        "JOIN pg_namespace AS n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND a.attidentity <> ''"
    ).fetchall()
    for table, column in identities:
        target.execute(
            sql.SQL(
                "SELECT setval(pg_get_serial_sequence({table}, {column}), "
                "coalesce((SELECT max({ident}) FROM {rel}), 0) + 1, false)"
            ).format(
                table=sql.Literal(table),
                column=sql.Literal(column),
                ident=sql.Identifier(column),
                rel=sql.Identifier(table),
            )
        )
