"""PooledHttp over real sockets: keep-alive, a server that drops idle connections, proxies from the
environment, timeouts and refusals."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from app.adapters.chatwoot import ChatwootClient
from app.adapters.http_pool import HttpFailure, PooledHttp
from app.ports.chatwoot import ChatwootError


@dataclass
class Recorder:
    """What a test server saw: request lines and how many connections were opened."""

    url: str
    request_lines: list[str] = field(default_factory=list)
    connections: int = 0


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (the timeout test) breaks the pipe: expected, not news."""


@contextmanager
def recording_server(*, close_after_each: bool = False, delay_s: float = 0.0) -> Iterator[Recorder]:
    recorder = Recorder(url="")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            recorder.connections += 1

        def _answer(self) -> None:
            recorder.request_lines.append(self.requestline)
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            time.sleep(delay_s)
            data = b'{"ok": true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            if close_after_each:
                # Closed without `Connection: close`, as a server whose idle timeout passed.
                self.close_connection = True

        do_GET = do_POST = _answer

        def log_message(self, *args: Any) -> None:
            pass

    server = QuietServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    recorder.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()


def pooled(url: str, *, timeout_s: float = 5.0) -> PooledHttp:
    return PooledHttp(url, timeout_s=timeout_s, connect_timeout_s=timeout_s, max_idle=4)


def test_requests_share_one_kept_alive_connection() -> None:
    with recording_server() as server:
        http = pooled(server.url)
        replies = [http.request("GET", f"/ping?n={n}") for n in range(20)]

    assert [r.status for r in replies] == [200] * 20
    assert replies[0].headers["content-type"] == "application/json"
    assert replies[0].body == b'{"ok": true}'
    assert server.connections == 1


def test_a_connection_the_server_closed_is_replaced_not_failed() -> None:
    with recording_server(close_after_each=True) as server:
        http = pooled(server.url)
        for _ in range(5):
            assert http.request("POST", "/messages", body=b"{}").status == 200
            time.sleep(0.05)  # the server's close reaches us before the next request

    assert server.connections == 5


def test_the_path_prefix_of_chatwoot_behind_a_reverse_proxy_is_kept() -> None:
    with recording_server() as server:
        base_url = f"{server.url}/chatwoot/"
        chatwoot = ChatwootClient(
            pooled(server.url), base_url=base_url, account_id=3, api_token="token"
        )
        with pytest.raises(ChatwootError, match="unexpected response shape"):
            chatwoot.search_contacts("tan+wei@example.com")  # the server's answer is not Chatwoot's

    assert server.request_lines == [
        "GET /chatwoot/api/v1/accounts/3/contacts/search?q=tan%2Bwei%40example.com HTTP/1.1"
    ]


def test_a_proxy_named_in_the_environment_carries_the_requests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with recording_server() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        http = pooled("http://chatwoot.example.test")
        assert http.request("GET", "/api/v1/profile").status == 200

    assert proxy.request_lines == ["GET http://chatwoot.example.test/api/v1/profile HTTP/1.1"]


def test_no_proxy_exempts_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    with recording_server() as proxy, recording_server() as chatwoot:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        assert pooled(chatwoot.url).request("GET", "/api/v1/profile").status == 200

    assert proxy.request_lines == []
    assert chatwoot.request_lines == ["GET /api/v1/profile HTTP/1.1"]


def test_a_slow_answer_is_a_timeout() -> None:
    with recording_server(delay_s=1.0) as server, pytest.raises(HttpFailure) as caught:
        pooled(server.url, timeout_s=0.2).request("GET", "/slow?email=a@example.com")

    assert caught.value.timed_out
    assert "example.com" not in str(caught.value)


def test_a_refused_connection_is_not_a_timeout() -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    with pytest.raises(HttpFailure) as caught:
        pooled(f"http://127.0.0.1:{port}").request("GET", "/")

    assert not caught.value.timed_out
    assert "refused" in str(caught.value).lower()


@pytest.mark.parametrize("origin", ["ftp://chatwoot.example.test", "chatwoot.example.test", ""])
def test_an_origin_that_is_not_http_is_refused_at_start(origin: str) -> None:
    with pytest.raises(ValueError, match="not an http"):
        pooled(origin)
