"""The shared base of the sandboxes: a Flask app on a real, threaded HTTP server on 127.0.0.1.

Tests and `ai-broker demo` talk to the sandboxes over real sockets, exactly as the product talks to
Chatwoot, OpenAI and n8n, so the HTTP clients, timeouts and retries under test are the real ones.
Each sandbox adds its own routes; this base adds the request timer, fault injection on the service
routes and the `/_sandbox/faults` control routes that every sandbox shares.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Self

from flask import Flask, Response, g, jsonify, request
from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

from app.sandbox.faults import Fault, Faults

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

logger = logging.getLogger(__name__)

CONTROL_PREFIX = "/_sandbox/"
SHUTDOWN_POLL_S = 0.05
# Puma's default persistent_timeout: longer than httpx's 5 s keep-alive expiry, so it is the client
# that drops an idle connection, never the server while a request is on its way.
KEEP_ALIVE_IDLE_S = 20.0
# http.client's limits on request header lines, which the stdlib parser applies.
_MAX_LINE = 65536
_MAX_HEADERS = 100
# Responses that carry no body, so no Content-Length either (RFC 9110 8.6).
_BODILESS_STATUSES = frozenset({204, 304})


class _RequestHeaders:
    """Request header fields as the fast path of `parse_request` reads them.

    Only what werkzeug and the handler use of the stdlib's message: `items()` in arrival order
    (repeats included) and case-insensitive `get` and `in`, which see a name's first field.
    """

    def __init__(self, fields: list[tuple[str, str]]) -> None:
        self._fields = fields
        self._first = {name.lower(): value for name, value in reversed(fields)}

    def items(self) -> list[tuple[str, str]]:
        return self._fields

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._first.get(name.lower(), default)

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._first


class _SandboxRequestHandler(WSGIRequestHandler):
    """werkzeug's handler, made to behave like the servers the sandboxes stand in for.

    - Headers whose names contain underscores are kept. werkzeug drops them (anti-spoofing), but
      Puma passes them to Rails, and Chatwoot's documented auth header is `api_access_token`.
    - Each request is logged at DEBUG under our logger instead of werkzeug's INFO access log: a
      demo under traffic makes thousands of requests and the access log would drown the rest.
    - Connections are kept alive (HTTP/1.1), as those servers do. werkzeug's own `run_wsgi` closes
      every connection, so each call of a pooled client reconnected and cost the sandbox a new
      thread: most of a sandbox's CPU under load. See `run_wsgi`.
    """

    protocol_version = "HTTP/1.1"
    timeout = KEEP_ALIVE_IDLE_S
    # Headers and body go out in two writes; Nagle would hold the body back for the client's
    # delayed ACK (40 ms) on a kept-alive connection.
    disable_nagle_algorithm = True

    def make_environ(self) -> WSGIEnvironment:
        environ = super().make_environ()
        for key, value in self.headers.items():
            if "_" in key:
                environ.setdefault(f"HTTP_{key.upper().replace('-', '_')}", value)
        return environ

    def parse_request(self) -> bool:
        """http.server's request parsing, with a plain header reader on the common path.

        The stdlib reads headers with the `email` package: a fifth of a request's CPU. A request
        line `<method> <target> HTTP/1.1` takes the fast path; anything else (HTTP/1.0, 0.9 or a
        malformed line) goes to the stdlib, which also answers the errors.
        """
        words = self.raw_requestline.split()
        if len(words) != 3 or words[2] != b"HTTP/1.1":
            return super().parse_request()
        self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        self.command, path = str(words[0], "iso-8859-1"), str(words[1], "iso-8859-1")
        self.request_version = "HTTP/1.1"
        # As the stdlib does (gh-87389): `//host/x` must not read as a URL without a scheme.
        self.path = "/" + path.lstrip("/") if path.startswith("//") else path
        fields: list[tuple[str, str]] = []
        while (line := self.rfile.readline(_MAX_LINE + 1)) not in (b"\r\n", b"\n", b""):
            if len(line) > _MAX_LINE or len(fields) >= _MAX_HEADERS:
                self.send_error(431, "Request header fields too large")
                return False
            text = str(line, "iso-8859-1")
            if text[0] in " \t" and fields:  # obsolete line folding: one more line of the value
                name, value = fields[-1]
                fields[-1] = (name, f"{value} {text.strip()}")
                continue
            name, colon, value = text.partition(":")
            if not colon or not name.strip():
                self.send_error(400, "Bad header line")
                return False
            fields.append((name.strip(), value.strip()))
        self.headers = _RequestHeaders(fields)  # type: ignore[assignment]
        self.close_connection = self.headers.get("Connection", "").lower() == "close"
        return True

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        logger.debug("%s %s -> %s", self.command, self.path, code)

    def log_error(self, format: str, *args: Any) -> None:
        # Mostly idle keep-alive connections timing out: the client's business, not an error.
        logger.debug("%s sandbox connection: " + format, self.server.server_address, *args)

    def run_wsgi(self) -> None:
        """Serve one request and keep the connection open for the next one.

        The body is read whole before the app runs (sandbox bodies are small), so the next request
        line is never mistaken for body bytes, whatever the app read. The response is buffered so
        that it always carries a Content-Length. A chunked or `Expect: 100-continue` request takes
        werkzeug's own path, which closes the connection afterwards.
        """
        if "Transfer-Encoding" in self.headers or "Expect" in self.headers:
            super().run_wsgi()
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.send_error(400, "Bad Content-Length")
            return
        body = self.rfile.read(length) if length else b""
        if len(body) < length:  # the client went away mid-body
            self.close_connection = True
            return
        self.environ = environ = self.make_environ()
        environ["wsgi.input"] = io.BytesIO(body)
        started: list[Any] = []
        chunks: list[bytes] = []

        def start_response(status: str, headers: list[tuple[str, str]], _exc: Any = None) -> Any:
            started[:] = [status, headers]
            return chunks.append  # WSGI's write()

        app_iter = self.server.app(environ, start_response)
        try:
            chunks.extend(app_iter)
        finally:
            close = getattr(app_iter, "close", None)
            if close is not None:
                close()
        payload = b"".join(chunks)
        status, headers = started
        code, _, reason = status.partition(" ")
        self.send_response(int(code), reason)
        for key, value in headers:
            self.send_header(key, value)
        bodiless = self.command == "HEAD" or int(code) in _BODILESS_STATUSES
        if not bodiless and not any(key.lower() == "content-length" for key, _ in headers):
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if not bodiless:
            self.wfile.write(payload)


class _SandboxHTTPServer(ThreadedWSGIServer):
    """werkzeug's threaded server, able to drop its kept-alive connections when it stops.

    A stopped sandbox must refuse its clients, as a stopped service does; a pooled connection
    left open would go on being served by the handler thread behind it.
    """

    def __init__(self, host: str, port: int, app: Flask) -> None:
        super().__init__(host, port, app, handler=_SandboxRequestHandler)
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.discard(request)

    def end_connections(self) -> None:
        """Let each connection finish the request it is serving, then close; idle ones at once.

        Shutting down only the reading side wakes a handler waiting for the next request (it reads
        end-of-stream and closes) without cutting off a response being written.
        """
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by its handler
                connection.shutdown(socket.SHUT_RD)


class _SandboxFlask(Flask):
    """Flask, remembering which hooks and views are synchronous.

    Flask asks `inspect` whether each hook and view is `async def` on every request (five times
    per sandbox request); the answer never changes.
    """

    def __init__(self, import_name: str) -> None:
        super().__init__(import_name)
        self._sync: dict[Callable[..., Any], Callable[..., Any]] = {}

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        sync = self._sync.get(func)
        if sync is None:
            sync = self._sync[func] = super().ensure_sync(func)
        return sync


def json_object() -> dict[str, Any] | None:
    """The request body as a JSON object: {} when empty, None when it is not a JSON object."""
    if not request.get_data(cache=True):
        return {}
    body = request.get_json(silent=True, force=True)
    return body if isinstance(body, dict) else None


def elapsed_ms() -> float:
    """Milliseconds since the current request arrived, fault latency included."""
    return (time.monotonic() - float(g.sandbox_started)) * 1000


class SandboxServer:
    """A sandbox HTTP server: build the app, `start()` it on an ephemeral port, `stop()` it.

    Subclasses implement `_register_routes` and usually `_fault_response` (to answer injected
    failures in their service's own error shapes).
    """

    name: ClassVar[str] = "sandbox"

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.faults = Faults()
        self._app: Flask | None = None
        self._server: _SandboxHTTPServer | None = None
        self._thread: threading.Thread | None = None
        # Set on stop() so that anything pausing inside a request returns at once.
        self._stopping = threading.Event()

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def app(self) -> Flask:
        """The WSGI app, built on first use (also usable with Flask's test client)."""
        if self._app is None:
            self._app = self._build_app()
        return self._app

    @property
    def url(self) -> str:
        """Base URL of the running server, e.g. `http://127.0.0.1:54321`."""
        if self._server is None:
            raise RuntimeError(f"{self.name} sandbox is not started")
        return f"http://{self.host}:{self._server.port}"

    def start(self) -> Self:
        """Bind (port 0 = an ephemeral port) and serve in a daemon thread; returns self."""
        if self._server is not None:
            raise RuntimeError(f"{self.name} sandbox is already started at {self.url}")
        self._stopping.clear()
        self._server = _SandboxHTTPServer(self.host, self.port, self.app)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            # A short poll makes stop() quick: shutdown waits for the loop's next poll.
            kwargs={"poll_interval": SHUTDOWN_POLL_S},
            name=f"sandbox-{self.name}",
            daemon=True,
        )
        self._thread.start()
        logger.info("%s sandbox listening on %s", self.name, self.url)
        return self

    def stop(self) -> None:
        """Stop serving and release any request held by a fault or a configured delay."""
        if self._server is None:
            return
        self._stopping.set()
        self.faults.release_hanging()
        self._server.shutdown()
        self._server.server_close()
        self._server.end_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
        logger.info("%s sandbox stopped", self.name)
        self._server = None
        self._thread = None
        self._on_stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def pause(self, seconds: float) -> None:
        """Sleep inside a request, but wake immediately when the server stops."""
        if seconds > 0:
            self._stopping.wait(seconds)

    # -- hooks for subclasses --------------------------------------------------------------------

    def _register_routes(self, app: Flask) -> None:
        raise NotImplementedError

    def _fault_response(self, fault: Fault) -> Response:
        """How an injected failure looks; subclasses answer in their service's error shape."""
        response = jsonify({"error": f"sandbox injected fault ({fault.kind})"})
        response.status_code = fault.status
        return response

    def _is_service_path(self, path: str) -> bool:
        """Whether faults apply to this path: everything but the control routes by default."""
        return not path.startswith(CONTROL_PREFIX)

    def _on_stop(self) -> None:
        """Release background resources (delivery threads, HTTP clients) after the server stops."""

    # -- app assembly ----------------------------------------------------------------------------

    def _build_app(self) -> Flask:
        app = _SandboxFlask(f"{__name__}.{self.name}")
        # The services we imitate answer with keys in a meaningful order; Flask sorts by default.
        app.json.sort_keys = False  # type: ignore[attr-defined]
        app.before_request(self._start_timer)
        app.before_request(self._inject_fault)
        app.after_request(self._hold_response)
        app.add_url_rule(
            "/_sandbox/faults",
            "sandbox_faults",
            self._faults_route,
            methods=["GET", "PUT", "DELETE"],
        )
        self._register_routes(app)
        return app

    @staticmethod
    def _start_timer() -> None:
        g.sandbox_started = time.monotonic()

    def _inject_fault(self) -> Response | None:
        if not self._is_service_path(request.path):
            return None
        self.pause(self.faults.latency_s())
        fault = self.faults.decide()
        if fault is None:
            return None
        logger.info(
            "%s sandbox: injecting %s on %s %s", self.name, fault, request.method, request.path
        )
        if fault.kind == "lost_response":
            g.sandbox_lost_response = fault  # served normally, then held in _hold_response
            return None
        if fault.kind == "timeout":
            self.faults.hang(fault)
        return self._fault_response(fault)

    def _hold_response(self, response: Response) -> Response:
        fault = g.pop("sandbox_lost_response", None)
        if fault is not None:
            self.faults.hang(fault)
        return response

    def _faults_route(self) -> tuple[Response, int] | Response:
        if request.method == "DELETE":
            self.faults.reset()
        elif request.method == "PUT":
            changes = json_object()
            if changes is None:
                return jsonify({"error": "send a JSON object of FaultPlan fields"}), 400
            try:
                self.faults.set(**changes)
            except ValueError as exc:
                return jsonify({"error": str(exc)}), 400
        return jsonify(dataclasses.asdict(self.faults.plan()))
