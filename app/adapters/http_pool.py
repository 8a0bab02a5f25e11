"""Keep-alive HTTP/1.1 connections to one origin, on urllib3, for the Chatwoot adapter.

A reply makes three Chatwoot calls. Through httpx each cost about 1.1 ms of CPU here (its
request and response models, then httpcore and h11 underneath); through urllib3, which builds
on the standard library's HTTP parser, about 0.75 ms (docs/performance.md). This wrapper keeps
the little the adapter needs: one origin, timeouts, a pool with a bounded number of idle
connections, the proxy the environment names, certifi's certificate bundle as httpx used, and a
response read in full.

There are no retries and no redirects here: the pipeline retries whole jobs, and its sends are
idempotent (app/services/pipeline.py `_post_once`), so a retry inside the client would only
stretch the worst case, as with the openai SDK's `max_retries=0`.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import certifi
import urllib3
from urllib3.exceptions import HTTPError, NewConnectionError, ProxyError, TimeoutError


class HttpFailure(Exception):
    """No HTTP response: the connection failed or a timeout passed. The message names the kind
    of failure, never the URL (whose query may hold an email or phone number)."""

    def __init__(self, message: str, *, timed_out: bool) -> None:
        super().__init__(message)
        self.timed_out = timed_out


@dataclass(frozen=True)
class HttpReply:
    status: int
    reason: str
    headers: Mapping[str, str]  # case-insensitive names
    body: bytes

    @property
    def is_success(self) -> bool:
        return 200 <= self.status < 300

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


class PooledHttp:
    """Requests to `origin` (scheme, host and port; paths are given per request).

    Safe to share between threads and greenlets: urllib3's pool hands each request its own
    connection, making a new one when every pooled connection is busy, and keeps at most
    `max_idle` idle ones. A pooled connection the server has closed is noticed before it is
    reused (urllib3 polls that one socket), so an idle-timeout on the far side costs a
    reconnect, not a failed call.
    """

    def __init__(
        self,
        origin: str,
        *,
        timeout_s: float,
        connect_timeout_s: float,
        max_idle: int,
    ) -> None:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) origin: {parts.scheme}://{parts.hostname}")
        self.origin = f"{parts.scheme}://{parts.netloc}"
        options: dict[str, Any] = {
            "num_pools": 1,
            "maxsize": max_idle,
            "block": False,
            "retries": False,
            "timeout": urllib3.Timeout(connect=connect_timeout_s, read=timeout_s),
            "ca_certs": certifi.where() if parts.scheme == "https" else None,
        }
        proxy = _proxy_for(parts.scheme, parts.hostname)
        self._pool: urllib3.PoolManager = (
            urllib3.ProxyManager(proxy, **options) if proxy else urllib3.PoolManager(**options)
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> HttpReply:
        """`path` includes the query. Raises `HttpFailure` when no response came back."""
        try:
            response = self._pool.request(
                method,
                self.origin + path,
                body=body,
                headers=headers,
                redirect=False,
                preload_content=True,
            )
        except (NewConnectionError, ProxyError) as exc:
            # Before TimeoutError: urllib3 makes NewConnectionError a ConnectTimeoutError.
            raise HttpFailure(_describe(exc), timed_out=False) from None
        except TimeoutError as exc:
            raise HttpFailure(_describe(exc), timed_out=True) from None
        except HTTPError as exc:
            raise HttpFailure(_describe(exc), timed_out=False) from None
        return HttpReply(response.status, response.reason or "", response.headers, response.data)

    def close(self) -> None:
        self._pool.clear()


def _describe(exc: HTTPError) -> str:
    """urllib3's messages name the host and port and the socket error, never the path."""
    return f"{type(exc).__name__}: {exc}"


def _proxy_for(scheme: str, host: str) -> str | None:
    """The proxy `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` name for this origin, unless
    `NO_PROXY` exempts the host: what httpx (trust_env) did."""
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(scheme) or proxies.get("all")
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    if not proxy or bypass(host, proxies):
        return None
    return proxy
