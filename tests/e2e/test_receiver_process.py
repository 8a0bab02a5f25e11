"""`ai-broker web` as a process: what only the real gunicorn shows."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from app.domain.webhook_auth import sign
from app.sandbox.chatwoot import ChatwootSandbox
from app.sandbox.llm import LLMSandbox
from app.web import MAX_BODY_BYTES
from tests.support.fixtures import chatwoot_fixture
from tests.support.system import (
    WEBHOOK_SECRET,
    RunningSystem,
    free_port,
    system_env,
    wait_until,
)

pytestmark = pytest.mark.e2e


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSystem]:
    """The receiver alone, with a home and a runtime directory of its own to look into."""
    data_dir = tmp_path_factory.mktemp("receiver")
    (data_dir / "run").mkdir()
    port = free_port()
    with ChatwootSandbox() as chatwoot, LLMSandbox() as llm:
        env = system_env(
            data_dir, port, chatwoot, llm, HOME=str(data_dir), XDG_RUNTIME_DIR=str(data_dir / "run")
        )
        running = RunningSystem(data_dir=data_dir, port=port, chatwoot=chatwoot, llm=llm, env=env)
        running.start("web")
        try:
            wait_until(lambda: _healthy(running.url), timeout=40, interval=0.2, what="/healthz")
            yield running
        finally:
            running.stop_all()


def test_gunicorn_opens_no_control_socket(receiver: RunningSystem) -> None:
    """gunicorn 25+ opens one at $XDG_RUNTIME_DIR/gunicorn.ctl or ~/.gunicorn/gunicorn.ctl, the
    same path for every instance of a user: one receiver stopping deleted another's."""
    time.sleep(1.0)  # it would be opened within milliseconds of the workers' start
    assert "Control socket" not in receiver.log_tail("web")
    home = Path(receiver.env["HOME"])
    assert not (home / "run" / "gunicorn.ctl").exists()
    assert not (home / ".gunicorn" / "gunicorn.ctl").exists()


def test_a_chunked_body_over_the_limit_answers_413(receiver: RunningSystem) -> None:
    """Without a Content-Length the limit is found while reading; it must still be a 413, not
    a body cut short that then fails its signature or its JSON."""
    connection = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=30)
    chunk = b"x" * 65_536
    try:
        connection.putrequest("POST", "/webhooks/chatwoot")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Transfer-Encoding", "chunked")
        # Signed or not, the size is checked first: the signature covers the whole body.
        connection.endheaders()
        for _ in range(MAX_BODY_BYTES // len(chunk) + 2):
            connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        connection.send(b"0\r\n\r\n")
        response = connection.getresponse()
        body = json.loads(response.read())
    finally:
        connection.close()
    assert response.status == 413, body
    assert body["error"] == "request_entity_too_large"


def _timed(call: Callable[[], int]) -> tuple[int, float]:
    started = time.perf_counter()
    status = call()
    return status, (time.perf_counter() - started) * 1000


def test_idle_and_slow_clients_do_not_hold_up_anyone_else(
    receiver: RunningSystem, report: Callable[[str], None]
) -> None:
    """Chatwoot gives a webhook 5 s. With 8 threads per process, 40 idle sockets held /healthz
    for 8 s and 300 made it time out: every conversation would have gone to a human."""
    port = receiver.port
    webhook = json.dumps(chatwoot_fixture("message_created.incoming_contact.json")).encode()

    def healthz() -> int:
        return httpx.get(f"{receiver.url}/healthz", timeout=10).status_code

    def signed_webhook() -> int:
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Chatwoot-Timestamp": timestamp,
            "X-Chatwoot-Signature": "sha256=" + sign(WEBHOOK_SECRET, timestamp, webhook),
        }
        return httpx.post(
            f"{receiver.url}/webhooks/chatwoot", content=webhook, headers=headers, timeout=10
        ).status_code

    with ExitStack() as held:
        for _ in range(300):  # connected, and never a byte
            held.enter_context(socket.create_connection(("127.0.0.1", port)))
        for _ in range(20):  # a body that will take forever
            slow = held.enter_context(socket.create_connection(("127.0.0.1", port)))
            slow.sendall(
                b"POST /webhooks/chatwoot HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
            )
        for _ in range(20):  # headers that never end
            slow = held.enter_context(socket.create_connection(("127.0.0.1", port)))
            slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        time.sleep(0.5)  # every one of them accepted and waiting
        health = [_timed(healthz) for _ in range(20)]
        acks = [_timed(signed_webhook) for _ in range(20)]
    assert [status for status, _ in health] == [200] * 20
    assert [status for status, _ in acks] == [200] * 20
    worst_health, worst_ack = max(ms for _, ms in health), max(ms for _, ms in acks)
    report(
        f"with 300 idle, 20 slow-body and 20 slow-header connections held: /healthz worst "
        f"{worst_health:.0f} ms, signed webhook worst {worst_ack:.0f} ms (20 each)"
    )
    # Bounds far above what it takes (a few ms) and far below what starving took (seconds).
    assert worst_health < 1000 and worst_ack < 2000
