"""Webhook load generator, run by the benchmark as its own process (so that its threads do not
share a GIL with the sandboxes the worker is talking to).

    python bench/loadgen.py SPEC.json

SPEC: {"url", "secret", "bodies": path of a JSON-lines file of webhook bodies, "concurrency",
"warmup": how many of the first bodies to send unmeasured, "duration_s": optional, stop taking
new bodies this long after the measured phase starts, "client": optional, "httpx" (default) or
"socket"}. Each body is signed the way Chatwoot
signs it (`X-Chatwoot-Signature` over `"<timestamp>.<body>"`) just before it is sent, with a fresh
`X-Chatwoot-Delivery` id. Threads each keep one keep-alive connection and take the next body until
none is left, or the duration is up: a closed loop at a fixed concurrency, for a fixed number of
requests or a fixed time. Prints one JSON object: per-request latencies (ms), status counts, wall
time, CPU.

The "socket" client writes each request as HTTP/1.1 bytes on a plain keep-alive socket and reads
the status line, headers and Content-Length body back: about a tenth of httpx's CPU per request
(0.08 ms against 0.8-0.9 ms on a 2-core EPYC VM), so that on a small machine the load generator
takes less of the cores it shares with the server under test. Same requests, same headers, same
closed loop.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from app.domain.webhook_auth import sign

REQUEST_TIMEOUT_S = 30.0


def run(spec: dict[str, Any]) -> dict[str, Any]:
    bodies = [line.encode() for line in Path(spec["bodies"]).read_text().splitlines() if line]
    warmup = int(spec.get("warmup", 0))
    concurrency = int(spec["concurrency"])
    duration_s = spec.get("duration_s")
    client = str(spec.get("client", "httpx"))
    if client not in CLIENTS:
        raise SystemExit(f"unknown client {client!r}: one of {', '.join(CLIENTS)}")
    _send_all(spec["url"], spec["secret"], bodies[:warmup], concurrency, client=client)
    cpu_before = os.times()
    started = time.perf_counter()
    deadline = None if duration_s is None else started + float(duration_s)
    latencies, statuses = _send_all(
        spec["url"], spec["secret"], bodies[warmup:], concurrency, deadline, client=client
    )
    wall_s = time.perf_counter() - started
    cpu_after = os.times()
    return {
        "concurrency": concurrency,
        "client": client,
        "sent": len(latencies),
        "unsent": len(bodies) - warmup - len(latencies),  # left over when the duration ran out
        "statuses": dict(statuses),
        "latencies_ms": latencies,
        "wall_s": wall_s,
        "cpu_s": (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system),
    }


class _Client(Protocol):
    def post(self, body: bytes, headers: dict[str, str]) -> str: ...
    def close(self) -> None: ...


class _HttpxClient:
    def __init__(self, url: str) -> None:
        self._url = url
        self._client = httpx.Client(timeout=REQUEST_TIMEOUT_S)

    def post(self, body: bytes, headers: dict[str, str]) -> str:
        try:
            return str(self._client.post(self._url, content=body, headers=headers).status_code)
        except httpx.HTTPError as exc:
            return type(exc).__name__

    def close(self) -> None:
        self._client.close()


class _SocketClient:
    """HTTP/1.1 POSTs on one keep-alive socket; reconnects when the server closes it."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._head = (
            f"POST {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1\r\n"
            f"Host: {parts.netloc}\r\n"
        ).encode()
        self._sock: socket.socket | None = None
        self._buffer = b""

    def post(self, body: bytes, headers: dict[str, str]) -> str:
        lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        request = b"%s%sContent-Length: %d\r\n\r\n%s" % (
            self._head,
            lines.encode(),
            len(body),
            body,
        )
        for attempt in (1, 2):
            fresh = self._sock is None
            try:
                if self._sock is None:
                    self._sock = socket.create_connection(self._address, REQUEST_TIMEOUT_S)
                    self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    self._buffer = b""
                self._sock.sendall(request)
                return self._response()
            except _ClosedBeforeResponse:
                # A keep-alive connection the server had closed: once more on a new one.
                self.close()
                if fresh or attempt == 2:
                    return "RemoteProtocolError"
            except OSError as exc:
                self.close()
                return type(exc).__name__
        return "RemoteProtocolError"

    def _response(self) -> str:
        assert self._sock is not None
        while (end := self._buffer.find(b"\r\n\r\n")) < 0:
            chunk = self._sock.recv(65536)
            if not chunk:
                if self._buffer:
                    raise ConnectionResetError("connection closed inside a response")
                raise _ClosedBeforeResponse
            self._buffer += chunk
        head, self._buffer = self._buffer[:end].decode("latin-1"), self._buffer[end + 4 :]
        status_line, *header_lines = head.split("\r\n")
        length, close = 0, False
        for line in header_lines:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection":
                close = value.strip().lower() == "close"
            elif name == "transfer-encoding":
                raise ConnectionError("chunked responses are not supported")
        while len(self._buffer) < length:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionResetError("connection closed inside a response body")
            self._buffer += chunk
        self._buffer = self._buffer[length:]
        if close:
            self.close()
        return status_line.split(" ", 2)[1]

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock, self._buffer = None, b""


class _ClosedBeforeResponse(ConnectionError):
    pass


CLIENTS = {"httpx": _HttpxClient, "socket": _SocketClient}


def _send_all(
    url: str,
    secret: str,
    bodies: list[bytes],
    concurrency: int,
    deadline: float | None = None,
    *,
    client: str = "httpx",
) -> tuple[list[float], Counter[str]]:
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    lock = threading.Lock()
    next_index = iter(range(len(bodies)))

    def take() -> int | None:
        if deadline is not None and time.perf_counter() >= deadline:
            return None
        with lock:
            return next(next_index, None)

    def worker() -> None:
        mine: list[float] = []
        seen: Counter[str] = Counter()
        connection: _Client = CLIENTS[client](url)
        try:
            while (index := take()) is not None:
                body = bodies[index]
                timestamp = str(int(time.time()))
                headers = {
                    "Content-Type": "application/json",
                    "X-Chatwoot-Delivery": str(uuid.uuid4()),
                    "X-Chatwoot-Timestamp": timestamp,
                    "X-Chatwoot-Signature": "sha256=" + sign(secret, timestamp, body),
                }
                sent = time.perf_counter()
                status = connection.post(body, headers)
                mine.append((time.perf_counter() - sent) * 1000)
                seen[status] += 1
        finally:
            connection.close()
        with lock:
            latencies.extend(mine)
            statuses.update(seen)

    threads = [threading.Thread(target=worker, name=f"load-{n}") for n in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, statuses


if __name__ == "__main__":
    result = run(json.loads(Path(sys.argv[1]).read_text()))
    sys.stdout.write(json.dumps(result))
