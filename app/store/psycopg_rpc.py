"""The store's functions over psycopg 3 and a connection pool (`DATABASE_URL`).

Each call is `SELECT public.ai_broker_<fn>(p_a => $1::type, ...)` in autocommit mode: one round
trip, one transaction. The argument types come from the function's own signature in
`pg_catalog` (looked up once per function and set of arguments), so a value is cast exactly as
PostgREST casts it for the REST transport, and psycopg prepares each statement after a few uses
(except behind a transaction-mode pooler, which cannot keep prepared statements).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from app.store.base import StoreError
from app.store.rpc import FUNCTION_PREFIX

log = logging.getLogger(__name__)

# Below Chatwoot's 5 s webhook timeout, as for the REST transport: a slow database must fail
# the call, not outlive the request that made it.
DEFAULT_TIMEOUT_S = 4.0
DEFAULT_POOL_SIZE = 10
# Supabase's transaction-mode pooler (Supavisor) listens here; its session mode on 5432.
TRANSACTION_POOLER_PORT = 6543
_JSON_TYPES = {"json", "jsonb"}
_SIGNATURES = """
SELECT p.pronargs, p.pronargdefaults, p.proargnames,
       ARRAY(SELECT format_type(t.oid, NULL)
               FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY AS t(oid, i) ORDER BY t.i),
       p.prorettype = 'void'::regtype, p.proretset
  FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
 WHERE n.nspname = 'public' AND p.proname = %s
"""


@dataclass(frozen=True)
class _Call:
    statement: sql.Composed
    json_args: tuple[bool, ...]
    returns_void: bool


def transaction_pooler(dsn: str) -> bool:
    """Whether the connection string points at Supabase's transaction-mode pooler."""
    try:
        port = urlsplit(dsn).port if "://" in dsn else None
    except ValueError:
        return False
    return port == TRANSACTION_POOLER_PORT


class PsycopgRpc:
    def __init__(
        self, pool: ConnectionPool, *, dsn: str, where: str, connect_timeout_s: int = 4
    ) -> None:
        self._pool = pool
        self._dsn = dsn
        self._where = where
        self._connect_timeout_s = connect_timeout_s
        self._calls: dict[tuple[str, tuple[str, ...]], _Call] = {}
        self._lock = threading.Lock()

    def call(self, function: str, params: Mapping[str, object]) -> Any:
        name = FUNCTION_PREFIX + function
        names = tuple(params)
        call = self._calls.get((name, names)) or self._prepare(name, names)
        values = [
            Jsonb(value) if is_json and value is not None else value
            for value, is_json in zip(params.values(), call.json_args, strict=True)
        ]
        try:
            with self._pool.connection() as connection:
                row = connection.execute(call.statement, values).fetchone()
        except PoolTimeout as exc:
            raise StoreError(self._no_connection(name)) from exc
        except psycopg.Error as exc:
            raise StoreError(_describe(name, self._where, exc)) from exc
        if call.returns_void or row is None:
            return None
        return row[0]

    def _prepare(self, name: str, names: tuple[str, ...]) -> _Call:
        try:
            with self._pool.connection() as connection:
                candidates = connection.execute(_SIGNATURES, (name,)).fetchall()
        except PoolTimeout as exc:
            raise StoreError(self._no_connection(name)) from exc
        except psycopg.Error as exc:
            raise StoreError(_describe(name, self._where, exc)) from exc
        matching = [c for c in candidates if _accepts(c, names)]
        if len(matching) != 1:
            found = "no function" if not matching else "several functions"
            raise StoreError(
                f"PostgreSQL ({self._where}) has {found} {name}({', '.join(names)}): the schema "
                "is missing or older than this build: run `ai-broker db init`"
            )
        arg_count, _, arg_names, arg_types, returns_void, returns_set = matching[0]
        if returns_set:
            raise StoreError(f"{name} returns a set; the store's functions return one value")
        types = dict(zip((arg_names or [])[:arg_count], arg_types, strict=True))
        arguments = sql.SQL(", ").join(
            sql.SQL("{} => %s::{}").format(sql.Identifier(arg), sql.SQL(types[arg]))
            for arg in names
        )
        call = _Call(
            statement=sql.SQL("SELECT {}.{}({})").format(
                sql.Identifier("public"), sql.Identifier(name), arguments
            ),
            json_args=tuple(types[arg] in _JSON_TYPES for arg in names),
            returns_void=bool(returns_void),
        )
        with self._lock:
            self._calls[(name, names)] = call
        return call

    def _no_connection(self, function: str) -> str:
        """Why the pool had no connection to give: the database refuses new ones (the pool
        only logs why), or every connection was busy."""
        try:
            with psycopg.connect(self._dsn, connect_timeout=self._connect_timeout_s):
                pass
        except psycopg.Error as exc:
            return _describe(function, self._where, exc)
        return (
            f"PostgreSQL ({self._where}): all {self._pool.max_size} connections of the pool "
            f"were busy for {self._pool.timeout:g} s ({function}); raise DATABASE_POOL_SIZE"
        )

    def close(self) -> None:
        self._pool.close()

    def describe(self) -> str:
        return f"PostgreSQL {self._where}"


def create_postgres_rpc(
    dsn: str,
    *,
    pool_size: int = DEFAULT_POOL_SIZE,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    transaction_mode: bool | None = None,
) -> PsycopgRpc:
    """A pool on `dsn`, opened lazily (the first call connects), so a process starts even while
    the database is down and reports it on its first store call."""
    transaction_mode = transaction_pooler(dsn) if transaction_mode is None else transaction_mode
    where = dsn_location(dsn)

    def configure(connection: psycopg.Connection[Any]) -> None:
        if not transaction_mode:
            # Behind a transaction pooler session settings would leak to other clients.
            connection.execute(
                "SELECT set_config('statement_timeout', %s, false)", (f"{int(timeout_s * 1000)}",)
            )

    pool: ConnectionPool = ConnectionPool(
        dsn,
        min_size=1,
        max_size=max(1, pool_size),
        timeout=timeout_s,
        kwargs={
            "autocommit": True,
            "connect_timeout": max(1, int(timeout_s)),
            # A transaction-mode pooler hands each transaction to any server connection, where
            # a statement prepared on another one does not exist.
            "prepare_threshold": None if transaction_mode else 5,
            "application_name": "ai-broker",
        },
        configure=configure,
        name="ai-broker-store",
        open=False,
    )
    pool.open(wait=False)
    log.info(
        "store: PostgreSQL %s (pool of %d, %s mode)",
        where,
        pool_size,
        "transaction" if transaction_mode else "session",
    )
    return PsycopgRpc(pool, dsn=dsn, where=where, connect_timeout_s=max(1, int(timeout_s)))


def cooperate_with_gevent() -> None:
    """Make psycopg's waits gevent's, in a process gevent has patched with `select=False`.

    psycopg waits for the server with its C function unless gevent patched `select`, and that
    wait blocks the whole hub: ten greenlets' 0.2 s queries took 2 s. The worker keeps the real
    `select` (see app/cli.py), so psycopg's own select-based waits are pointed at gevent's
    select and selectors instead: queries then yield to the other greenlets while they wait.
    """
    import gevent.select
    import gevent.selectors
    from psycopg import waiting

    waiting.select = gevent.select  # type: ignore[attr-defined]
    waiting.DefaultSelector = gevent.selectors.DefaultSelector  # type: ignore[attr-defined]
    waiting.wait = waiting.wait_select


def _accepts(candidate: Sequence[Any], names: tuple[str, ...]) -> bool:
    arg_count, defaults, arg_names = candidate[0], candidate[1], candidate[2] or []
    inputs = list(arg_names[:arg_count])
    required = set(inputs[: arg_count - defaults])
    return set(names) <= set(inputs) and required <= set(names)


def dsn_location(dsn: str) -> str:
    """host:port/database of a connection string, never its password."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "(unparsable DATABASE_URL)"
    host = info.get("host") or "localhost"
    port = info.get("port") or "5432"
    return f"{host}:{port}/{info.get('dbname') or info.get('user') or ''}"


def _describe(function: str, where: str, error: psycopg.Error) -> str:
    diag = error.diag
    # One line: libpq's connection errors come with a hint on a second line.
    message = " ".join((diag.message_primary or str(error) or type(error).__name__).split())
    state = error.sqlstate or ""
    if isinstance(error, psycopg.errors.UndefinedFunction | psycopg.errors.UndefinedTable):
        return (
            f"PostgreSQL ({where}) {function} failed: {message}; the schema is missing or "
            "older than this build: run `ai-broker db init`"
        )
    if isinstance(error, psycopg.errors.InsufficientPrivilege):
        return f"PostgreSQL ({where}) refused {function}: {message}; check DATABASE_URL's role"
    if isinstance(error, psycopg.OperationalError) and not state:
        return f"PostgreSQL ({where}) is unreachable ({function}): {message}"
    if isinstance(error, psycopg.errors.RaiseException):
        return message
    return f"PostgreSQL ({where}) {function} failed: {message} (SQLSTATE {state or 'none'})"
