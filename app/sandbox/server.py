"""The shared base of the sandboxes: a Flask app on a real, threaded HTTP server on 127.0.0.1.

Tests and `ai-broker demo` talk to the sandboxes over real sockets, exactly as the product talks to
Chatwoot, OpenAI and n8n, so the HTTP clients, timeouts and retries under test are the real ones.
Each sandbox adds its own routes; this base adds the request timer, fault injection on the service
routes and the `/_sandbox/faults` control routes that every sandbox shares.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Self

from flask import Flask, Response, g, jsonify, request
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from app.sandbox.faults import Fault, Faults

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

logger = logging.getLogger(__name__)

CONTROL_PREFIX = "/_sandbox/"
SHUTDOWN_POLL_S = 0.05


class _SandboxRequestHandler(WSGIRequestHandler):
    """werkzeug's handler, made to behave like the servers the sandboxes stand in for.

    - Headers whose names contain underscores are kept. werkzeug drops them (anti-spoofing), but
      Puma passes them to Rails, and Chatwoot's documented auth header is `api_access_token`.
    - Each request is logged at DEBUG under our logger instead of werkzeug's INFO access log: a
      demo under traffic makes thousands of requests and the access log would drown the rest.
    """

    def make_environ(self) -> WSGIEnvironment:
        environ = super().make_environ()
        for key, value in self.headers.items():
            if "_" in key:
                environ.setdefault(f"HTTP_{key.upper().replace('-', '_')}", value)
        return environ

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        logger.debug("%s %s -> %s", self.command, self.path, code)


def json_object() -> dict[str, Any] | None:
    """The request body as a JSON object: {} when empty, None when it is not a JSON object."""
    if not request.get_data(cache=True):
        return {}
    body = request.get_json(silent=True, force=True)
    return body if isinstance(body, dict) else None


def elapsed_ms() -> float:
    """Milliseconds since the current request arrived, fault latency included."""
    return (time.monotonic() - g.sandbox_started) * 1000


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
        self._server: BaseWSGIServer | None = None
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
        self._server = make_server(
            self.host, self.port, self.app, threaded=True, request_handler=_SandboxRequestHandler
        )
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
        app = Flask(f"{__name__}.{self.name}")
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
