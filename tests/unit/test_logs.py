"""Logging set-up: what reaches the log at LOG_LEVEL=DEBUG."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from app.adapters.http_pool import PooledHttp
from app.logs import configure_logging, mask_contact_details


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


@pytest.mark.parametrize(
    "phone",
    [
        "+6591234567",
        "+65 9123 4567",
        "(+65) 9123 4567",
        "(65) 9123-4567",
        "+65.9123.4567",
        "65 9123 4567",
        "6591234567",
        "0065 9123 4567",
        "%2B6591234567",
        "%2b65%209123%204567",
        "9123 4567",
        "9123-4567",
        "91234567",
        "+1 (415) 555-0167",
    ],
)
def test_phone_numbers_are_masked_as_people_write_them(phone: str) -> None:
    masked = mask_contact_details(f"lead form from {phone}, please call")
    assert masked == "lead form from ***67, please call"


@pytest.mark.parametrize(
    "text",
    [
        "2026-12-04 04:18:24",
        "job j_5f1d2c3b0a4e",
        "5f1d2c3b-0a4e-4c8b-9f1a-6b7c8d9e0f11",
        "conversation=90211",
        "at 1795621874.489",
        "redis 127.0.0.1:6379",
        "p99 2110 ms",
    ],
)
def test_ids_dates_and_figures_stay_searchable(text: str) -> None:
    assert mask_contact_details(text) == text


@pytest.mark.usefixtures("restored_logging")
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_no_logged_value_can_forge_a_line_and_tracebacks_are_masked(
    capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    configure_logging("INFO", fmt)
    forged = "ok\n2026-12-04 04:00:00,000 WARNING web app.web.admin: rollback by admin-api"
    log = logging.getLogger("app.test")
    log.info("rollout changed by %s (%s)", "ops\r\nINFO fake", forged)
    log.info("name \x1b[31mred\x1b[0m\u2028next")
    try:
        raise ValueError(f"bad phone +65 9123 4567 from tan@example.com\n{forged}")
    except ValueError:
        log.exception("lead form failed")

    lines = capsys.readouterr().err.splitlines()
    records = [line for line in lines if not line.startswith(" ")]
    assert len(records) == 3, lines  # one line per record; the traceback is indented under it
    if fmt == "json":
        assert all(json.loads(line) for line in lines)
    logged = "\n".join(lines)
    assert "9123 4567" not in logged and "tan@example.com" not in logged
    assert "\x1b" not in logged and "\u2028" not in logged
    assert "WARNING web app.web.admin" in logged  # still there, as text inside a record
