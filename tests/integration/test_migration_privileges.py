"""After every store migration, Supabase's client roles can do nothing with ai-broker's objects.

Supabase exposes `public` to `anon` and `authenticated` (its anon key and signed-in users) and
grants them, by default privileges, everything created there. The store is for `service_role`
only, so each migration must take those grants back (and PUBLIC's EXECUTE on functions), enable
row level security on its tables, and leave every `ai_broker_` function to service_role.

A fresh database gets Supabase's default privileges first, so what a migration forgets to revoke
shows here. The migrations are applied one at a time, as `apply_migrations` does, and checked
after each: a database may stay at any version until the next deploy. The one allowance is a gap
0001 shipped with (SHIPPED_GAPS), which a later migration must close.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import suppress
from typing import Any

import psycopg
import pytest
from psycopg import sql

from app.store.postgres_migrations import migrations
from tests.support.postgres import ADMIN_DSN, ensure_service_role, temporary_database

CLIENT_ROLES = ("anon", "authenticated")
TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
COLUMN_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "REFERENCES")
SEQUENCE_PRIVILEGES = ("USAGE", "SELECT", "UPDATE")
# 0001 is shipped and stays as it is: its revokes miss the identity columns' sequences, which
# 0002's ai_broker_restrict_access() takes back. A database at 0001 has exactly these left, and
# after the newest migration nothing may be left at all.
SHIPPED_GAPS = {"0001": re.compile(r"(anon|authenticated) sequence \w+: (USAGE|SELECT|UPDATE)")}
# What Supabase runs in every project, as the role that creates the schema's objects.
SUPABASE_DEFAULTS = [
    f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON {kind} TO anon, authenticated"
    for kind in ("TABLES", "FUNCTIONS", "SEQUENCES")
]

# Objects in `public` that the migrations made: not there before (an extension of template1).
_OBJECTS = """
SELECT 'relation', c.oid, c.relname, c.relkind::text
  FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
UNION ALL
SELECT 'function', p.oid, p.oid::regprocedure::text, p.prokind::text
  FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
 WHERE n.nspname = 'public'
"""

# One row per privilege a client role holds, however it came (its own grant, PUBLIC's).
_CLIENT_GAPS = """
SELECT format('%%s %%s: %%s', r.role, c.relname, p.privilege)
  FROM pg_class AS c
 CROSS JOIN unnest(%(roles)s::text[]) AS r (role)
 CROSS JOIN unnest(%(table_privileges)s::text[]) AS p (privilege)
 WHERE c.oid = ANY (%(oids)s) AND c.relkind <> 'S'
   AND (has_table_privilege(r.role, c.oid, p.privilege)
        OR (p.privilege = ANY (%(column_privileges)s)
            AND has_any_column_privilege(r.role, c.oid, p.privilege)))
UNION ALL
SELECT format('%%s sequence %%s: %%s', r.role, c.relname, p.privilege)
  FROM pg_class AS c
 CROSS JOIN unnest(%(roles)s::text[]) AS r (role)
 CROSS JOIN unnest(%(sequence_privileges)s::text[]) AS p (privilege)
 WHERE c.oid = ANY (%(oids)s) AND c.relkind = 'S'
   AND has_sequence_privilege(r.role, c.oid, p.privilege)
UNION ALL
SELECT format('%%s function %%s: EXECUTE', r.role, f.oid::regprocedure)
  FROM pg_proc AS f
 CROSS JOIN unnest(%(roles)s::text[]) AS r (role)
 WHERE f.oid = ANY (%(oids)s) AND has_function_privilege(r.role, f.oid, 'EXECUTE')
ORDER BY 1
"""

# Grants to PUBLIC reach every role of the project, not only the client ones. A NULL ACL is
# the owner's default, which for functions gives PUBLIC EXECUTE.
_PUBLIC_GRANTS = """
SELECT format('PUBLIC %%s: %%s', c.relname, a.privilege_type)
  FROM pg_class AS c,
       aclexplode(coalesce(
           c.relacl,
           acldefault(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::"char", c.relowner)
       )) AS a
 WHERE c.oid = ANY (%(oids)s) AND a.grantee = 0
UNION ALL
SELECT format('PUBLIC function %%s: %%s', f.oid::regprocedure, a.privilege_type)
  FROM pg_proc AS f, aclexplode(coalesce(f.proacl, acldefault('f'::"char", f.proowner))) AS a
 WHERE f.oid = ANY (%(oids)s) AND a.grantee = 0
ORDER BY 1
"""


def ensure_client_roles() -> None:
    """Supabase's anon and authenticated: server-wide, created once and left there."""
    for role in CLIENT_ROLES:
        # DuplicateObject: another test run created it at the same moment.
        with (
            psycopg.connect(ADMIN_DSN, autocommit=True) as connection,
            suppress(psycopg.errors.DuplicateObject),
        ):
            connection.execute(
                sql.SQL(
                    "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {}) "
                    "THEN CREATE ROLE {} NOLOGIN; END IF; END $$"
                ).format(sql.Literal(role), sql.Identifier(role))
            )


def created_objects(
    connection: psycopg.Connection[Any], before: set[int]
) -> list[tuple[str, int, str, str]]:
    return [row for row in connection.execute(_OBJECTS) if row[1] not in before]


def access_gaps(connection: psycopg.Connection[Any], oids: list[int]) -> list[str]:
    params = {
        "roles": list(CLIENT_ROLES),
        "table_privileges": list(TABLE_PRIVILEGES),
        "column_privileges": list(COLUMN_PRIVILEGES),
        "sequence_privileges": list(SEQUENCE_PRIVILEGES),
        "oids": oids,
    }
    gaps = [row[0] for row in connection.execute(_CLIENT_GAPS, params)]
    return gaps + [row[0] for row in connection.execute(_PUBLIC_GRANTS, params)]


@pytest.fixture
def supabase_like_dsn() -> Iterator[str]:
    with temporary_database(migrated=False) as dsn:
        ensure_service_role()
        ensure_client_roles()
        with psycopg.connect(dsn, autocommit=True) as connection:
            for statement in SUPABASE_DEFAULTS:
                connection.execute(statement.encode())
        yield dsn


def test_supabase_defaults_would_grant_the_client_roles_everything(
    supabase_like_dsn: str,
) -> None:
    # The control: without a migration's revokes, this test bed does expose new objects.
    with psycopg.connect(supabase_like_dsn) as connection:
        before = {row[1] for row in connection.execute(_OBJECTS)}
        connection.execute(
            "CREATE TABLE probe (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY);"
            "CREATE FUNCTION ai_broker_probe() RETURNS integer LANGUAGE sql AS 'SELECT 1'"
        )
        gaps = access_gaps(connection, [row[1] for row in created_objects(connection, before)])
        connection.rollback()
    for role in CLIENT_ROLES:
        assert f"{role} probe: SELECT" in gaps
        assert f"{role} sequence probe_id_seq: UPDATE" in gaps
        assert f"{role} function ai_broker_probe(): EXECUTE" in gaps
    assert "PUBLIC function ai_broker_probe(): EXECUTE" in gaps


def test_every_migration_leaves_the_client_roles_nothing(supabase_like_dsn: str) -> None:
    applied = migrations()
    assert applied, "no migration files found"
    problems: dict[str, list[str]] = {}
    with psycopg.connect(supabase_like_dsn, autocommit=True) as connection:
        before = {row[1] for row in connection.execute(_OBJECTS)}
        for version, migration in applied:
            # As apply_migrations: one transaction per file, recorded in schema_migrations.
            with connection.transaction():
                connection.execute(migration.encode())
                connection.execute(
                    "INSERT INTO schema_migrations (version) VALUES (%s) "
                    "ON CONFLICT (version) DO NOTHING",
                    (version,),
                )
            found = problems_after(connection, created_objects(connection, before))
            shipped = SHIPPED_GAPS.get(version)
            newest = version == applied[-1][0]
            problems[version] = [
                problem
                for problem in found
                if newest or shipped is None or not shipped.fullmatch(problem)
            ]
    left = {version: found for version, found in problems.items() if found}
    assert not left, f"left after each migration: {left}"


def problems_after(
    connection: psycopg.Connection[Any], objects: list[tuple[str, int, str, str]]
) -> list[str]:
    oids = [oid for _, oid, _, _ in objects]
    tables = {name for _, _, name, relkind in objects if relkind in ("r", "p")}
    functions = [name for kind, _, name, _ in objects if kind == "function"]
    assert {"reply_jobs", "schema_migrations"} <= tables  # the migrations' objects were found
    found = access_gaps(connection, oids)
    # The revokes find functions by their prefix: one without it would keep its grants.
    found += [f"not prefixed ai_broker_: {f}" for f in functions if not f.startswith("ai_broker_")]
    found += [
        f"no row level security: {name}"
        for (name,) in connection.execute(
            "SELECT relname FROM pg_class WHERE oid = ANY (%s) AND relkind IN ('r', 'p') "
            "AND NOT relrowsecurity ORDER BY 1",
            (oids,),
        )
    ]
    found += [
        f"service_role cannot execute {name}"
        for (name,) in connection.execute(
            "SELECT oid::regprocedure::text FROM pg_proc WHERE oid = ANY (%s) "
            "AND NOT has_function_privilege('service_role', oid, 'EXECUTE') ORDER BY 1",
            (oids,),
        )
    ]
    return found
