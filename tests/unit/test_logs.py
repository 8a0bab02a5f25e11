"""Logging set-up: what reaches the log at LOG_LEVEL=DEBUG."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from app.adapters.http_pool import PooledHttp
from app.logs import configure_logging


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in ("urllib3", "httpx", "huey")}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, saved in levels.items():
        logging.getLogger(name).setLevel(saved)


class Answer(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.usefixtures("restored_logging")
def test_debug_logging_does_not_print_the_urls_of_contact_searches(
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        configure_logging("DEBUG")
        http = PooledHttp(
            f"http://127.0.0.1:{server.server_address[1]}",
            timeout_s=5,
            connect_timeout_s=5,
            max_idle=1,
        )
        http.request("GET", "/api/v1/accounts/3/contacts/search?q=tan.weiming%40example.com")
        logging.getLogger("app.test").debug("our own debug line")
    finally:
        server.shutdown()
        server.server_close()

    logged = capsys.readouterr().err
    assert "our own debug line" in logged
    assert "weiming" not in logged
