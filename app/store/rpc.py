"""How the PostgreSQL store reaches its database: one call of one `ai_broker_*` function.

In PostgreSQL the store's whole API is the set of SQL functions in app/store/migrations. Two
transports call them and return the same Python values (JSON-decoded: objects, arrays,
numbers, strings, booleans, None):

- `PsycopgRpc` (app/store/psycopg_rpc.py): psycopg 3 over a connection pool, on `DATABASE_URL`
  (a plain PostgreSQL, or Supabase's direct connection or pooler);
- `PostgrestRpc` (app/store/supabase.py): supabase-py over Supabase's REST API (PostgREST's
  /rpc), for deployments that only have `SUPABASE_URL` and a service key.

One call is one database transaction either way, so every rule lives once, in SQL.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

FUNCTION_PREFIX = "ai_broker_"


class Rpc(Protocol):
    def call(self, function: str, params: Mapping[str, object]) -> Any:
        """Call `ai_broker_<function>` with named arguments; its result, JSON-decoded (None
        for a void function). Raises StoreError when the database cannot answer."""
        ...

    def close(self) -> None: ...

    def describe(self) -> str:
        """Where the calls go, for logs and `doctor` (no credentials)."""
        ...
