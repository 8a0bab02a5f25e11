"""The HTTP/1.1 client of one webhook worker: plain sockets, kept-alive connections, redirects.

The sandbox sends two or three webhooks per customer message. httpx cost about 1.8 ms of CPU per
delivery and `http.client` 0.6 ms (its `email` header parser alone a third of that); under
benchmark load that was a third of the sandbox's CPU. A webhook is one small POST whose answer is
only a status, so this client writes the request in one piece and reads the response by hand.
A worker sends one request at a time, so one idle connection per origin is all the pooling it
needs. Redirects are followed as httpx does with `follow_redirects=True, max_redirects=10`.
"""

from __future__ import annotations

import select
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import BinaryIO
from urllib.parse import urljoin, urlsplit

MAX_REDIRECTS = 10
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# httpx's keep-alive expiry: a receiver (gunicorn: 5 s) drops idle connections about then.
KEEP_ALIVE_EXPIRY_S = 5.0
# Headers that describe a body, dropped when a redirect turns the POST into a GET (as httpx does).
_BODY_HEADERS = frozenset({"content-length", "transfer-encoding"})
_MAX_LINE = 65536
_MAX_HEADERS = 100


class WebhookHttpError(Exception):
    """A delivery failed above the socket level (sockets raise OSError, TimeoutError included)."""


class RemoteProtocolError(WebhookHttpError):
    """The receiver closed the connection or answered something that is not HTTP/1.x."""


class TooManyRedirectsError(WebhookHttpError):
    """More than MAX_REDIRECTS redirects."""


@dataclass
class _Connection:
    sock: socket.socket
    reader: BinaryIO
    idle_since: float = field(default_factory=time.monotonic)

    def close(self) -> None:
        self.reader.close()
        self.sock.close()

    def dropped(self) -> bool:
        """Whether not to reuse it: idle too long, or closed by the receiver (it reads EOF)."""
        if time.monotonic() - self.idle_since >= KEEP_ALIVE_EXPIRY_S:
            return True
        readable, _, _ = select.select([self.sock], [], [], 0)
        return bool(readable)


class WebhookHttp:
    """POSTs for one worker thread; not thread-safe. `timeout_s` bounds connect and each read."""

    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._tls: ssl.SSLContext | None = None  # built on first https use: it costs ~40 ms
        self._idle: dict[tuple[str, str], _Connection] = {}

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        """The final status after redirects. Raises OSError or WebhookHttpError."""
        method, content = "POST", body
        for _ in range(MAX_REDIRECTS + 1):
            status, location = self._send(method, url, content, headers)
            if status not in REDIRECT_STATUSES or location is None:
                return status
            url = urljoin(url, location)
            if status == 303 or (status in (301, 302) and method == "POST"):
                method, content = "GET", b""
                headers = {k: v for k, v in headers.items() if k.lower() not in _BODY_HEADERS}
        raise TooManyRedirectsError(f"Exceeded maximum allowed redirects ({MAX_REDIRECTS}).")

    def close(self) -> None:
        for connection in self._idle.values():
            connection.close()
        self._idle.clear()

    def _send(
        self, method: str, url: str, content: bytes, headers: dict[str, str]
    ) -> tuple[int, str | None]:
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
        origin = (parts.scheme, host)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if method != "GET":
            lines.append(f"Content-Length: {len(content)}")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + content
        connection = self._connection(origin, parts.hostname or "", parts.port)
        try:
            connection.sock.sendall(request)
            status, location, keep = _read_response(connection.reader, method)
        except BaseException:
            connection.close()
            raise
        if keep:
            connection.idle_since = time.monotonic()
            self._idle[origin] = connection
        else:
            connection.close()
        return status, location

    def _connection(self, origin: tuple[str, str], hostname: str, port: int | None) -> _Connection:
        """The origin's idle connection if the receiver kept it open, else a new one."""
        idle = self._idle.pop(origin, None)
        if idle is not None:
            if not idle.dropped():
                return idle
            idle.close()
        https = origin[0] == "https"
        sock = socket.create_connection((hostname, port or (443 if https else 80)), self._timeout_s)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if https:
                if self._tls is None:
                    self._tls = ssl.create_default_context()
                sock = self._tls.wrap_socket(sock, server_hostname=hostname)
        except BaseException:
            sock.close()
            raise
        return _Connection(sock, sock.makefile("rb"))


def _read_response(reader: BinaryIO, method: str) -> tuple[int, str | None, bool]:
    """Read one response: (status, Location, whether the connection can be used again)."""
    while True:
        version, status, headers = _read_head(reader)
        if not 100 <= status < 200:
            break
    connection = headers.get("connection", "").lower()
    keep = connection != "close" and (version == "HTTP/1.1" or connection == "keep-alive")
    if method == "HEAD" or status in (204, 304):
        pass
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        _skip_chunked(reader)
    elif "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            raise RemoteProtocolError("Invalid Content-Length") from None
        if len(reader.read(length)) < length:
            raise RemoteProtocolError("Server disconnected before the end of the body.")
    else:
        reader.read()  # the body runs until the server closes the connection
        keep = False
    return status, headers.get("location"), keep


def _read_head(reader: BinaryIO) -> tuple[str, int, dict[str, str]]:
    line = reader.readline(_MAX_LINE + 1)
    if not line:
        raise RemoteProtocolError("Server disconnected without sending a response.")
    version, _, rest = str(line, "latin-1").partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise RemoteProtocolError(f"Invalid status line {line[:80]!r}")
    headers: dict[str, str] = {}
    for _ in range(_MAX_HEADERS):
        line = reader.readline(_MAX_LINE + 1)
        if line in (b"\r\n", b"\n"):
            return version, int(code), headers
        if not line or len(line) > _MAX_LINE:
            break
        name, _, value = str(line, "latin-1").partition(":")
        headers.setdefault(name.strip().lower(), value.strip())
    raise RemoteProtocolError("Invalid response headers.")


def _skip_chunked(reader: BinaryIO) -> None:
    while True:
        size_line = reader.readline(_MAX_LINE + 1)
        try:
            size = int(size_line.split(b";", 1)[0], 16)
        except ValueError:
            raise RemoteProtocolError("Invalid chunk size.") from None
        if size == 0:
            break
        if len(reader.read(size + 2)) < size + 2:
            raise RemoteProtocolError("Server disconnected inside a chunk.")
    while reader.readline(_MAX_LINE + 1) not in (b"\r\n", b"\n", b""):
        pass  # trailer fields
