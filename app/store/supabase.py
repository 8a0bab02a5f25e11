"""The PostgreSQL store over Supabase's REST API: supabase-py calling the store's functions.

For deployments that have only `SUPABASE_URL` and a service key (no database connection
string): every store call is one POST to PostgREST's /rpc, and one HTTP request is one
database transaction, whatever the number of rows it touches. The functions return one value
each (jsonb for rows), which PostgREST's max-rows cap (1,000 on Supabase) does not cut.

The schema is not created through the REST API (it cannot be): `ai-broker db init` applies the
migrations over a connection string, or prints them for Supabase's SQL editor.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx
from postgrest.exceptions import APIError
from supabase import Client, ClientOptions, create_client

from app.store.base import StoreError
from app.store.postgres import PostgresStore
from app.store.rpc import FUNCTION_PREFIX

logger = logging.getLogger(__name__)

# Below Chatwoot's 5 s webhook timeout: a slow store must fail the request, not outlive it.
DEFAULT_TIMEOUT_S = 4.0
# PostgREST error codes that mean the schema is missing or older than this build.
_SCHEMA_ERRORS = {"PGRST202", "PGRST205", "42883", "42P01", "42703"}
_AUTH_ERRORS = {"PGRST301", "PGRST302", "42501"}


class PostgrestRpc:
    def __init__(self, client: Client, *, where: str = "Supabase") -> None:
        self._client = client
        self._where = where

    def call(self, function: str, params: Mapping[str, object]) -> Any:
        name = FUNCTION_PREFIX + function
        try:
            return self._client.rpc(name, dict(params)).execute().data
        except APIError as exc:
            raise StoreError(_describe(name, exc)) from exc
        except httpx.HTTPError as exc:
            raise StoreError(f"Supabase is unreachable ({name}): {exc!r}") from exc

    def close(self) -> None:
        # The store owns its client (create_supabase_store builds it for the store).
        self._client.postgrest.session.close()

    def describe(self) -> str:
        return self._where


def create_supabase_store(
    url: str, service_key: str, *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> PostgresStore:
    """A store on the Supabase project at `url`, authenticated with its service-role key.

    supabase-py waits 120 s for PostgREST by default; a store call must fail fast instead, so
    the receiver can still answer Chatwoot within its 5 s. The HTTP client carries the timeout
    (supabase-py deprecates its own timeout option).
    """
    options = ClientOptions(httpx_client=httpx.Client(timeout=timeout_s))
    client = create_client(url, service_key, options)
    return PostgresStore(PostgrestRpc(client, where=f"Supabase {urlsplit(url).hostname}"))


def _describe(what: str, error: APIError) -> str:
    code = error.code or ""
    detail = f"{error.message or 'request failed'} (code {code or 'none'})"
    if code in _SCHEMA_ERRORS:
        return (
            f"Supabase {what} failed: {detail}; the schema is missing or older than this "
            "build: run `ai-broker db init`"
        )
    if code in _AUTH_ERRORS or (error.message or "").lower() in {
        "invalid api key",
        "no api key found in request",
    }:
        return f"Supabase refused {what}: {detail}; check SUPABASE_SERVICE_ROLE_KEY"
    return f"Supabase {what} failed: {detail}"
