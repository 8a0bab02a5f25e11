"""A local Supabase Data API: PostgREST's HTTP contract, served from a real PostgreSQL database.

Supabase's REST layer (its gateway and PostgREST) cannot run here, so this sandbox plays it for
what supabase-py sends on behalf of the Supabase store, and answers the way PostgREST does:

- `POST|GET /rest/v1/rpc/<fn>`: the JSON object's keys name the arguments; the function is
  looked up by name and argument names, the values are decoded by `json_to_record` against the
  function's own parameter types and the function is called with named notation. A scalar
  result is the bare JSON value, a composite an object, SETOF an array, void `204 No Content`.
- `GET|POST|PATCH|DELETE /rest/v1/<table>`: `select=`, horizontal filters (`eq neq gt gte lt
  lte like ilike is in`, `not.`), `order=`, `limit=`, `offset=`; inserts and upserts
  (`Prefer: resolution=…`, `on_conflict=`, `columns=`), `Prefer: return=…`, and singular
  responses (`Accept: application/vnd.pgrst.object+json`).
- `max-rows` (Supabase's default 1,000): reads return at most `max_rows` rows, whatever `limit=`
  asks, and `Content-Range` counts from `offset=`. As in PostgREST since v10, rows returned by
  POST/PATCH/DELETE are not cut, and a function's result is cut only when it is SETOF: a single
  value, such as one jsonb array, is one row.
- The gateway's checks: an `apikey` header and `Authorization: Bearer` equal to the service
  key; each request then runs in one transaction (read-only for GET), as `db_role` when set
  (`service_role`, so the migration's grants are what is tested), with a small connection pool
  and PostgREST's acquisition timeout.
- Errors as PostgREST writes them, `{"code", "details", "hint", "message"}`, with its SQLSTATE
  to HTTP status table (23505 -> 409, P0001 -> 400, PTxyz -> xyz, ...) and its PGRSTxxx codes.

Postgres itself writes the JSON (`json_agg`, `to_json`), as in PostgREST, so numbers, floats and
timestamps come out exactly as Supabase would send them. Not served: resource embedding, aggregates,
`PUT`, counts, `Prefer: missing=default`.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import psycopg
from flask import Flask, Response, request
from psycopg import sql

from app.sandbox.faults import Fault
from app.sandbox.server import SandboxServer

logger = logging.getLogger(__name__)

REST_PREFIX = "/rest/v1"
SINGULAR = "application/vnd.pgrst.object+json"
JSON_TYPE = "application/json; charset=utf-8"
_RESERVED_PARAMS = {"select", "order", "limit", "offset", "on_conflict", "columns"}
_COMPARISONS = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_IS_VALUES = {"null": "NULL", "not_null": "NOT NULL", "true": "TRUE", "false": "FALSE"}
_EXACT_STATUS = {
    "23503": 409,
    "23505": 409,
    "25006": 405,
    "42883": 404,
    "42P01": 404,
    "42P17": 500,
    "42501": 403,
    "53400": 500,
    "P0001": 400,
}
_CLASS_STATUS = {
    "08": 503,
    "09": 500,
    "0L": 403,
    "0P": 403,
    "25": 500,
    "28": 403,
    "2D": 500,
    "38": 500,
    "39": 500,
    "3B": 500,
    "40": 500,
    "53": 503,
    "54": 500,
    "55": 500,
    "57": 500,
    "58": 500,
    "F0": 500,
    "HV": 500,
    "P0": 500,
    "XX": 500,
}


class ApiError(Exception):
    """An answer in PostgREST's error shape."""

    def __init__(
        self,
        status: int,
        code: str | None,
        message: str,
        *,
        details: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"code": code, "details": details, "hint": hint, "message": message}


def status_for_sqlstate(code: str) -> int:
    """PostgREST's HTTP status for a PostgreSQL error code (its docs' table, authenticated)."""
    if code.startswith("PT") and code[2:].isdigit():
        return int(code[2:])
    return _EXACT_STATUS.get(code) or _CLASS_STATUS.get(code[:2], 400)


def _parse_error(raw: str, details: str | None = None) -> ApiError:
    return ApiError(
        400, "PGRST100", f'"failed to parse filter ({raw})" (line 1, column 1)', details=details
    )


# -- the schema cache ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Table:
    name: str
    columns: dict[str, str]  # name -> SQL type, in table order
    primary_key: tuple[str, ...]

    def column_type(self, column: str) -> str:
        if column not in self.columns:
            raise ApiError(
                400,
                "42703",
                f"column {self.name}.{column} does not exist",
                hint=None,
            )
        return self.columns[column]


@dataclass(frozen=True)
class Function:
    name: str
    args: tuple[tuple[str, str], ...]  # (name, SQL type) of the input arguments
    required: frozenset[str]
    returns_set: bool
    returns_void: bool
    returns_composite: bool

    def accepts(self, keys: set[str]) -> bool:
        return self.required <= keys <= {name for name, _ in self.args}


@dataclass
class SchemaCache:
    tables: dict[str, Table] = field(default_factory=dict)
    functions: dict[str, list[Function]] = field(default_factory=dict)


_TABLES_QUERY = """
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
       EXISTS (SELECT 1 FROM pg_index AS i
                WHERE i.indrelid = c.oid AND i.indisprimary AND a.attnum = ANY (i.indkey))
  FROM pg_class AS c
  JOIN pg_namespace AS n ON n.oid = c.relnamespace
  JOIN pg_attribute AS a ON a.attrelid = c.oid
 WHERE n.nspname = %s AND c.relkind IN ('r', 'v', 'm', 'p', 'f')
   AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY c.relname, a.attnum
"""

_FUNCTIONS_QUERY = """
SELECT p.proname, p.proargnames, p.proargmodes, p.pronargs, p.pronargdefaults, p.proretset,
       p.prorettype = 'void'::regtype,
       t.typtype = 'c' OR p.prorettype = 'record'::regtype,
       ARRAY(SELECT format_type(a.type, NULL)
               FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY AS a (type, position)
              ORDER BY a.position)
  FROM pg_proc AS p
  JOIN pg_namespace AS n ON n.oid = p.pronamespace
  JOIN pg_type AS t ON t.oid = p.prorettype
 WHERE n.nspname = %s AND p.prokind = 'f'
"""


def _load_schema(connection: psycopg.Connection[Any], schema: str) -> SchemaCache:
    cache = SchemaCache()
    columns: dict[str, dict[str, str]] = {}
    keys: dict[str, list[str]] = {}
    for table, column, column_type, is_key in connection.execute(_TABLES_QUERY, (schema,)):
        columns.setdefault(table, {})[column] = column_type
        if is_key:
            keys.setdefault(table, []).append(column)
    for table, table_columns in columns.items():
        cache.tables[table] = Table(table, table_columns, tuple(keys.get(table, ())))
    for row in connection.execute(_FUNCTIONS_QUERY, (schema,)):
        name, names, modes, nargs, ndefaults, returns_set, void, composite, types = row
        # proargnames covers OUT arguments too; the input ones are modes i, b (inout), v.
        input_names = [
            arg_name
            for index, arg_name in enumerate(names or [])
            if modes is None or modes[index] in ("i", "b", "v")
        ][:nargs]
        if len(input_names) != nargs or not all(input_names):
            continue  # unnamed arguments cannot be called with a JSON object
        args = tuple(zip(input_names, types, strict=True))
        required = frozenset(input_names[: nargs - ndefaults])
        function = Function(name, args, required, returns_set, void, composite)
        cache.functions.setdefault(name, []).append(function)
    return cache


# -- connections --------------------------------------------------------------------------------
class _Pool:
    """A few reusable connections, like PostgREST's pool (`db-pool`), with its acquire timeout."""

    def __init__(self, dsn: str, size: int, acquire_timeout_s: float) -> None:
        self._dsn = dsn
        self._slots = threading.BoundedSemaphore(size)
        self._acquire_timeout_s = acquire_timeout_s
        self._idle: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        if not self._slots.acquire(timeout=self._acquire_timeout_s):
            raise ApiError(504, "PGRST003", "Timed out acquiring connection from connection pool.")
        connection = None
        try:
            with self._lock:
                connection = self._idle.pop() if self._idle else None
            if connection is None or connection.closed:
                try:
                    connection = psycopg.connect(self._dsn, autocommit=True)
                except psycopg.OperationalError as exc:
                    raise ApiError(
                        503,
                        "PGRST000",
                        "Database connection error. Retrying the connection.",
                        details=str(exc).strip(),
                    ) from exc
            yield connection
        finally:
            if connection is not None:
                healthy = (
                    not connection.closed
                    and connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
                )
                if healthy:
                    with self._lock:
                        self._idle.append(connection)
                else:
                    connection.close()
            self._slots.release()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


# -- the sandbox --------------------------------------------------------------------------------
class PostgrestSandbox(SandboxServer):
    """Supabase's Data API for one database: `start()`, then `create_client(sandbox.url, key)`."""

    name: ClassVar[str] = "postgrest"

    def __init__(
        self,
        dsn: str,
        *,
        service_key: str,
        schema: str = "public",
        db_role: str | None = None,
        pool_size: int = 10,
        pool_timeout_s: float = 10.0,
        max_rows: int = 1000,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        if not service_key:
            raise ValueError("the PostgREST sandbox needs a service key to check requests against")
        if max_rows < 1:
            raise ValueError("max_rows must be at least 1")
        self._max_rows = max_rows
        self._service_key = service_key
        self._schema = schema
        self._db_role = db_role
        self._pool = _Pool(dsn, pool_size, pool_timeout_s)
        self._cache: SchemaCache | None = None
        self._cache_lock = threading.Lock()

    # -- hooks ---------------------------------------------------------------------------------
    def _register_routes(self, app: Flask) -> None:
        app.add_url_rule(
            f"{REST_PREFIX}/rpc/<function>", "rpc", self._rpc_route, methods=["GET", "POST"]
        )
        app.add_url_rule(
            f"{REST_PREFIX}/<table>",
            "table",
            self._table_route,
            methods=["GET", "POST", "PATCH", "DELETE"],
        )

    def _fault_response(self, fault: Fault) -> Response:
        if fault.kind == "rate_limit":
            # Supabase's gateway, not PostgREST, throttles: its body has no code.
            return _json_response(429, {"message": "Too many requests"})
        return _error_response(
            ApiError(
                fault.status,
                "PGRST000" if fault.status == 503 else None,
                f"sandbox injected fault ({fault.kind})",
            )
        )

    def _on_stop(self) -> None:
        self._pool.close()

    # -- request plumbing ------------------------------------------------------------------------
    def _serve(self, work: Callable[[psycopg.Connection[Any], SchemaCache], Response]) -> Response:
        try:
            self._authorize()
            self._check_profile()
            with self._pool.connection() as connection:
                cache = self._schema_cache(connection)
                with connection.transaction():
                    if request.method in ("GET", "HEAD"):
                        connection.execute("SET TRANSACTION READ ONLY")
                    if self._db_role:
                        connection.execute(
                            sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(self._db_role))
                        )
                    return work(connection, cache)
        except ApiError as exc:
            return _error_response(exc)
        except psycopg.Error as exc:
            return _error_response(_database_error(exc))

    def _authorize(self) -> None:
        # Supabase's gateway: the project's API key, in the header supabase-py sends.
        api_key = request.headers.get("apikey")
        if not api_key:
            raise ApiError(
                401,
                None,
                "No API key found in request",
                hint="No `apikey` request header or url param was found.",
            )
        if not hmac.compare_digest(api_key.encode(), self._service_key.encode()):
            raise ApiError(
                401,
                None,
                "Invalid API key",
                hint="Double check your Supabase `anon` or `service_role` API key.",
            )
        # PostgREST: the bearer token decides the database role; only the service key is known.
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "PGRST302", "Anonymous access is disabled")
        if not hmac.compare_digest(token.strip().encode(), self._service_key.encode()):
            raise ApiError(401, "PGRST301", "JWSError JWSInvalidSignature")

    def _check_profile(self) -> None:
        for header in ("Accept-Profile", "Content-Profile"):
            profile = request.headers.get(header)
            if profile is not None and profile != self._schema:
                raise ApiError(
                    406,
                    "PGRST106",
                    f"Invalid schema: {profile}",
                    hint=f"Only the following schemas are exposed: {self._schema}",
                )

    def _schema_cache(self, connection: psycopg.Connection[Any]) -> SchemaCache:
        with self._cache_lock:
            if self._cache is None:
                with connection.transaction():
                    self._cache = _load_schema(connection, self._schema)
            return self._cache

    # -- /rpc ------------------------------------------------------------------------------------
    def _rpc_route(self, function: str) -> Response:
        if request.method == "POST":
            body = _json_body()
            if not isinstance(body, dict):
                return _error_response(ApiError(400, "PGRST102", "Empty or invalid json"))
            arguments: dict[str, Any] = body
        else:
            arguments = dict(request.args.items())

        def work(connection: psycopg.Connection[Any], cache: SchemaCache) -> Response:
            target = self._find_function(connection, cache, function, set(arguments))
            return _call_function(connection, self._schema, target, arguments, self._max_rows)

        return self._serve(work)

    def _find_function(
        self,
        connection: psycopg.Connection[Any],
        cache: SchemaCache,
        name: str,
        keys: set[str],
    ) -> Function:
        candidates = [f for f in cache.functions.get(name, []) if f.accepts(keys)]
        if not candidates:
            # Created since the cache was loaded? PostgREST needs `NOTIFY pgrst, 'reload
            # schema'` for that; the sandbox reloads by itself.
            fresh = self._reload_in(connection)
            candidates = [f for f in fresh.functions.get(name, []) if f.accepts(keys)]
        if len(candidates) == 1:
            return candidates[0]
        qualified = f"{self._schema}.{name}"
        if candidates:
            raise ApiError(
                300,
                "PGRST203",
                f"Could not choose the best candidate function between: {qualified}",
                hint="Try renaming the parameters or the function itself in the database "
                "so function overloading can be resolved",
            )
        listed = ", ".join(sorted(keys))
        searched = f"with parameters {listed}" if keys else "without parameters"
        raise ApiError(
            404,
            "PGRST202",
            f"Could not find the function {qualified}({listed}) in the schema cache",
            details=f"Searched for the function {qualified} {searched} or with a single "
            "unnamed json/jsonb parameter, but no matches were found in the schema cache.",
        )

    def _reload_in(self, connection: psycopg.Connection[Any]) -> SchemaCache:
        # Inside the request's transaction: a savepoint keeps a failure from spoiling it.
        with self._cache_lock, connection.transaction():
            self._cache = _load_schema(connection, self._schema)
            return self._cache

    # -- tables ----------------------------------------------------------------------------------
    def _table_route(self, table: str) -> Response:
        body: Any = None
        if request.method in ("POST", "PATCH"):
            content_type = request.headers.get("Content-Type", "application/json")
            if not content_type.startswith("application/json"):
                return _error_response(
                    ApiError(415, "PGRST107", f"Content-Type not acceptable: {content_type}")
                )
            body = _json_body()
            if body is None:
                return _error_response(ApiError(400, "PGRST102", "Empty or invalid json"))

        def work(connection: psycopg.Connection[Any], cache: SchemaCache) -> Response:
            target = cache.tables.get(table)
            if target is None:
                target = self._reload_in(connection).tables.get(table)
            if target is None:
                raise ApiError(
                    404,
                    "PGRST205",
                    f"Could not find the table '{self._schema}.{table}' in the schema cache",
                )
            query = _TableQuery(self._schema, target, self._max_rows)
            return query.run(connection, request.method, body)

        return self._serve(work)


# -- calling functions --------------------------------------------------------------------------
def _call_function(
    connection: psycopg.Connection[Any],
    schema: str,
    function: Function,
    arguments: dict[str, Any],
    max_rows: int,
) -> Response:
    passed = [(name, sql_type) for name, sql_type in function.args if name in arguments]
    call = sql.SQL("{}.{}({})").format(
        sql.Identifier(schema),
        sql.Identifier(function.name),
        sql.SQL(", ").join(
            sql.SQL("{} := _pgrst_args.{}").format(sql.Identifier(n), sql.Identifier(n))
            for n, _ in passed
        ),
    )
    # As PostgREST: the JSON body is decoded by json_to_record with the parameters' own types.
    source: sql.Composable = sql.SQL("")
    params: tuple[Any, ...] = ()
    if passed:
        source = sql.SQL("FROM json_to_record(%s::json) AS _pgrst_args ({})").format(
            sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t))  # type from pg_catalog
                for n, t in passed
            )
        )
        params = (json.dumps({name: arguments[name] for name, _ in passed}),)
    if function.returns_void:
        connection.execute(sql.SQL("SELECT {} {}").format(call, source), params)
        return _no_content(204)
    # PostgREST caps every function result at max-rows; a non-SETOF one is a single row.
    limit = sql.SQL("LIMIT {}").format(sql.Literal(max_rows))
    if function.returns_composite:
        # The function in FROM: its columns become the objects' keys.
        rows = sql.SQL("{}, LATERAL" if passed else "FROM").format(source)
        query = sql.SQL(
            "SELECT coalesce(json_agg(_pgrst_t), '[]')::text "
            "FROM (SELECT _pgrst_t.* {} {} AS _pgrst_t {}) AS _pgrst_t"
        ).format(rows, call, limit)
    else:
        query = sql.SQL(
            "SELECT coalesce(json_agg(_pgrst_s.v), '[]')::text "
            "FROM (SELECT {} AS v {} {}) AS _pgrst_s"
        ).format(call, source, limit)
    (body,) = _fetch_one(connection, query, params)
    if not function.returns_set:
        # A single value or row: PostgREST sends it bare, not in an array.
        body = json.dumps(json.loads(body)[0]) if body != "[]" else "null"
    return Response(body, status=200, content_type=JSON_TYPE)


def _fetch_one(
    connection: psycopg.Connection[Any], query: sql.Composed, params: tuple[Any, ...] | list[Any]
) -> tuple[Any, ...]:
    row = connection.execute(query, params).fetchone()
    assert row is not None  # an aggregate always answers one row
    return tuple(row)


# -- table requests -----------------------------------------------------------------------------
class _TableQuery:
    """One table request: PostgREST's query grammar, turned into one SQL statement."""

    def __init__(self, schema: str, table: Table, max_rows: int) -> None:
        self.table = table
        self.max_rows = max_rows
        self.target = sql.Identifier(schema, table.name)
        self.params: list[Any] = []
        self.prefer = _preferences()

    def run(self, connection: psycopg.Connection[Any], method: str, body: Any) -> Response:
        source: sql.Composable
        if method in ("GET", "HEAD"):
            source = sql.SQL("SELECT * FROM {} {} {} {}").format(
                self.target, self._where(), self._order(), self._limit()
            )
        elif method == "POST":
            source = self._insert(body)
        elif method == "PATCH":
            source = self._update(body)
        elif method == "DELETE":
            source = sql.SQL("DELETE FROM {} {} RETURNING {}.*").format(
                self.target, self._where(), self.target
            )
        else:
            raise ApiError(405, "PGRST117", f"Unsupported HTTP method: {method}")
        query = sql.SQL(
            "WITH _pgrst_source AS ({}) "
            "SELECT coalesce(json_agg(_pgrst_t), '[]')::text, count(*) "
            "FROM (SELECT {} FROM _pgrst_source) AS _pgrst_t"
        ).format(source, self._columns())
        body_text, count = _fetch_one(connection, query, self.params)
        return self._respond(method, body_text, int(count))

    def _respond(self, method: str, body: str, count: int) -> Response:
        # A read's range starts at its offset (PostgREST's rangeStatusHeader); writes' at 0.
        first = self._offset() if method in ("GET", "HEAD") else 0
        headers = {"Content-Range": f"{first}-{first + count - 1}/*" if count else "*/*"}
        if method in ("GET", "HEAD"):
            return self._representation(body, count, 200, headers)
        applied = [f"{k}={v}" for k, v in self.prefer.items() if k in ("return", "resolution")]
        if applied:
            headers["Preference-Applied"] = ", ".join(applied)
        status = 201 if method == "POST" else 200
        if self.prefer.get("return") == "representation":
            return self._representation(body, count, status, headers)
        if method == "POST":
            headers["Content-Range"] = "*/*"
        return _no_content(201 if method == "POST" else 204, headers)

    def _representation(
        self, body: str, count: int, status: int, headers: dict[str, str]
    ) -> Response:
        if SINGULAR in request.headers.get("Accept", ""):
            if count != 1:
                raise ApiError(
                    406,
                    "PGRST116",
                    "Cannot coerce the result to a single JSON object",
                    details=f"The result contains {count} rows",
                )
            return Response(
                json.dumps(json.loads(body)[0]),
                status=status,
                headers=headers,
                content_type=f"{SINGULAR}; charset=utf-8",
            )
        return Response(body, status=status, headers=headers, content_type=JSON_TYPE)

    # -- grammar -------------------------------------------------------------------------------
    def _columns(self) -> sql.Composable:
        raw = request.args.get("select", "*").replace(" ", "")
        if raw in ("", "*"):
            return sql.SQL("*")
        names = raw.split(",")
        for name in names:
            if not name or "(" in name or ":" in name:
                raise _parse_error(raw, "embedding, renaming and casts are not served here")
            self.table.column_type(name)
        return sql.SQL(", ").join(sql.Identifier(name) for name in names)

    def _where(self) -> sql.Composable:
        conditions = [
            self._condition(column, expression)
            for column, expression in request.args.items(multi=True)
            if column not in _RESERVED_PARAMS
        ]
        if not conditions:
            return sql.SQL("")
        return sql.SQL("WHERE {}").format(sql.SQL(" AND ").join(conditions))

    def _condition(self, column: str, expression: str) -> sql.Composable:
        column_type = self.table.column_type(column)
        negate = expression.startswith("not.")
        operator, dot, value = expression.removeprefix("not.").partition(".")
        if not dot:
            raise _parse_error(expression)
        target = sql.Identifier(column)
        if operator in _COMPARISONS:
            self.params.append(value)
            condition = sql.SQL("{} {} %s::{}").format(
                target, sql.SQL(_COMPARISONS[operator]), sql.SQL(column_type)
            )
        elif operator in ("like", "ilike"):
            self.params.append(value.replace("*", "%"))
            condition = sql.SQL("{}::text {} %s").format(target, sql.SQL(operator.upper()))
        elif operator == "is" and value in _IS_VALUES:
            condition = sql.SQL("{} IS {}").format(target, sql.SQL(_IS_VALUES[value]))
        elif operator == "in" and value.startswith("(") and value.endswith(")"):
            self.params.append(_split_list(value[1:-1]))
            condition = sql.SQL("{} = ANY (%s::{}[])").format(target, sql.SQL(column_type))
        else:
            raise _parse_error(expression, f"unknown operator or value: {operator}")
        return sql.SQL("NOT ({})").format(condition) if negate else condition

    def _order(self) -> sql.Composable:
        raw = request.args.get("order")
        if not raw:
            return sql.SQL("")
        terms = []
        for term in raw.split(","):
            column, *modifiers = term.split(".")
            self.table.column_type(column)
            parts: list[sql.Composable] = [sql.Identifier(column)]
            for modifier in modifiers:
                keyword = {
                    "asc": "ASC",
                    "desc": "DESC",
                    "nullsfirst": "NULLS FIRST",
                    "nullslast": "NULLS LAST",
                }.get(modifier)
                if keyword is None:
                    raise _parse_error(raw, f"unexpected order modifier {modifier!r}")
                parts.append(sql.SQL(keyword))
            terms.append(sql.SQL(" ").join(parts))
        return sql.SQL("ORDER BY {}").format(sql.SQL(", ").join(terms))

    def _limit(self) -> sql.Composable:
        # max-rows is a hard cap: a larger `limit=` is cut to it (PostgREST's restrictRange).
        requested = self._non_negative("limit")
        limit = self.max_rows if requested is None else min(requested, self.max_rows)
        return sql.SQL("LIMIT {} OFFSET {}").format(sql.Literal(limit), sql.Literal(self._offset()))

    def _offset(self) -> int:
        return self._non_negative("offset") or 0

    def _non_negative(self, name: str) -> int | None:
        raw = request.args.get(name)
        if raw is None:
            return None
        if not raw.isdigit():
            raise _parse_error(raw, f"{name} must be a non-negative integer")
        return int(raw)

    # -- writes --------------------------------------------------------------------------------
    def _payload_columns(self, rows: list[dict[str, Any]]) -> list[str]:
        raw = request.args.get("columns")
        if raw is not None:
            names = [name.strip().strip('"') for name in raw.split(",") if name.strip()]
        else:
            names = list(rows[0]) if rows else []
            if any(set(row) != set(names) for row in rows):
                raise ApiError(400, "PGRST102", "All object keys must match")
        for name in names:
            if name not in self.table.columns:
                raise ApiError(
                    400,
                    "PGRST204",
                    f"Could not find the '{name}' column of '{self.table.name}' "
                    "in the schema cache",
                )
        return names

    def _insert(self, body: Any) -> sql.Composable:
        rows = body if isinstance(body, list) else [body]
        if not all(isinstance(row, dict) for row in rows):
            raise ApiError(400, "PGRST102", "Empty or invalid json")
        names = self._payload_columns(rows)
        columns = sql.SQL(", ").join(sql.Identifier(name) for name in names)
        self.params.append(json.dumps(rows))
        return sql.SQL(
            "INSERT INTO {} ({}) SELECT {} FROM json_populate_recordset(NULL::{}, %s::json) "
            "{} RETURNING {}.*"
        ).format(self.target, columns, columns, self.target, self._on_conflict(names), self.target)

    def _on_conflict(self, names: list[str]) -> sql.Composable:
        resolution = self.prefer.get("resolution")
        if resolution not in ("merge-duplicates", "ignore-duplicates"):
            return sql.SQL("")
        raw = request.args.get("on_conflict")
        keys = [k.strip() for k in raw.split(",")] if raw else list(self.table.primary_key)
        for key in keys:
            self.table.column_type(key)
        target = sql.SQL(", ").join(sql.Identifier(key) for key in keys)
        updates = [name for name in names if name not in keys]
        if resolution == "ignore-duplicates" or not updates:
            return sql.SQL("ON CONFLICT ({}) DO NOTHING").format(target)
        return sql.SQL("ON CONFLICT ({}) DO UPDATE SET {}").format(
            target,
            sql.SQL(", ").join(
                sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(n), sql.Identifier(n))
                for n in updates
            ),
        )

    def _update(self, body: Any) -> sql.Composable:
        if not isinstance(body, dict):
            raise ApiError(400, "PGRST102", "Empty or invalid json")
        names = self._payload_columns([body])
        if not names:
            # Nothing to set: PostgREST answers without touching a row.
            return sql.SQL("SELECT * FROM {} WHERE false").format(self.target)
        columns = sql.SQL(", ").join(sql.Identifier(name) for name in names)
        self.params.append(json.dumps(body))
        update = sql.SQL(
            "UPDATE {} SET ({}) = (SELECT {} FROM json_populate_record(NULL::{}, %s::json)) "
        ).format(self.target, columns, columns, self.target)
        # The payload parameter comes before the filters' parameters in the statement.
        return sql.SQL("{} {} RETURNING {}.*").format(update, self._where(), self.target)


# -- helpers ------------------------------------------------------------------------------------
def _json_body() -> Any:
    """The request body as JSON; {} when empty; None when it is not JSON."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _preferences() -> dict[str, str]:
    prefer: dict[str, str] = {}
    for header in request.headers.getlist("Prefer"):
        for item in header.split(","):
            key, _, value = item.strip().partition("=")
            if key:
                prefer[key] = value
    return prefer


def _split_list(raw: str) -> list[str]:
    """The items of an `in.(…)` list: commas separate, double quotes protect, \\ escapes."""
    items: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in raw:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    items.append("".join(current))
    return items


def _database_error(exc: psycopg.Error) -> ApiError:
    diag = exc.diag
    code = exc.sqlstate or "XX000"
    return ApiError(
        status_for_sqlstate(code),
        code,
        diag.message_primary or str(exc).strip(),
        details=diag.message_detail,
        hint=diag.message_hint,
    )


def _no_content(status: int, headers: dict[str, str] | None = None) -> Response:
    """A response without a body, and so without a Content-Type (Flask would add text/html)."""
    response = Response(status=status, headers=headers)
    del response.headers["Content-Type"]
    return response


def _json_response(status: int, body: dict[str, Any]) -> Response:
    return Response(json.dumps(body), status=status, content_type=JSON_TYPE)


def _error_response(error: ApiError) -> Response:
    logger.debug("postgrest sandbox: %s %s", error.status, error.body)
    if error.body["code"] is None and error.status == 401:
        # The gateway's own errors carry only a message and a hint.
        return _json_response(
            error.status, {"message": error.body["message"], "hint": error.body["hint"]}
        )
    return _json_response(error.status, error.body)
