"""Overview with Redis: customer messages a worker parked in the intake buffer are an alert and a
table (ids, times and sizes, never their content), and "Put parked messages back" returns them to
the buffer, audited. Without Redis the page says nothing about it; with Redis down it says so.

Against the test's own redis-server (tests/support/redis_server.py), flushed for every test.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis
from streamlit.testing.v1 import AppTest

from app.adapters.redis_intake import Claimed, RedisIntake
from app.domain.events import InboundMessage
from app.domain.intake_entry import BufferedInbound
from app.store.analytics import Analytics
from app.store.base import Store
from console import auth, data
from tests.console.conftest import OPERATOR, no_failures, table
from tests.console.test_presentation import ALIVE, status
from tests.support.redis_server import RedisServer
from tests.support.system import free_port

CONTENT = "Call me on +65 9123 4567 or tan.ah.kow@example.com about the loan"
CONTACT = "Tan Ah Kow"
RECEIVED_AT = 1_700_000_000.5
_ids = itertools.count(700_000)


@pytest.fixture
def buffer(
    data_dir: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RedisIntake]:
    """The console's intake buffer (REDIS_URL set after data_dir clears it), empty."""
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    yield RedisIntake(client)  # the namespace the console's services use
    client.close()


def park(buffer: RedisIntake, count: int) -> list[BufferedInbound]:
    """Push `count` messages and park them as a worker that cannot record them does."""
    parked = []
    for _ in range(count):
        message_id = next(_ids)
        item = BufferedInbound(
            message=InboundMessage(
                message_id=message_id,
                conversation_id=message_id % 1000 + 1,
                account_id=1,
                inbox_id=2,
                content=CONTENT,
                created_at=None,
                contact_id=3,
                contact_name=CONTACT,
            ),
            delivery_id=None,
            received_at=RECEIVED_AT,
            payload=f'{{"content":"{CONTENT}"}}'.encode(),
        )
        buffer.push(item)
        [claimed] = buffer.claim("worker", limit=1, block_s=0.1)
        buffer.reject("worker", claimed)
        parked.append(item)
    return parked


def confirm(app: AppTest, reason: str) -> AppTest:
    app.text_area(key="dialog_reason").input(reason)
    return app.button(key="dialog_confirm").click().run()


def page_text(app: AppTest) -> str:
    """Every text the page shows: alerts, markdown, captions, toasts and tables."""
    texts = [
        getattr(element, "value", "")
        for kind in ("markdown", "caption", "error", "warning", "info", "success", "toast")
        for element in app.get(kind)
    ]
    texts += [frame.value.to_csv() for frame in app.dataframe]
    return "\n".join(str(text) for text in texts)


def test_parked_messages_are_an_alert_and_a_table_without_their_content(
    console: Callable[..., AppTest], buffer: RedisIntake
) -> None:
    parked = park(buffer, 2)
    buffer._redis.lpush(buffer.rejected_key, b"not an intake entry")  # parked last: newest
    app = console()
    no_failures_but_the_alert(app)
    [alert] = [e.value for e in app.error if "parked" in e.value]
    assert "3 customer messages are parked in the intake buffer" in alert
    assert "docs/runbook.md" in alert and "Put parked messages back" in alert
    listed = table(app, "message id")
    assert list(listed["state"]) == ["parked", "parked", "unreadable"]  # oldest first
    assert list(listed["message id"]) == [str(p.message.message_id) for p in parked] + ["—"]
    assert list(listed["conversation"])[:2] == [str(p.message.conversation_id) for p in parked]
    assert "unreadable intake entry" in listed["problem"].iloc[2]
    text = page_text(app)
    for secret in (CONTENT, "9123 4567", "tan.ah.kow@example.com", CONTACT):
        assert secret not in text
    assert not app.button(key="parked_replay").disabled
    assert buffer.rejected() == 3  # looking moves nothing


def test_put_parked_messages_back_moves_them_and_is_audited(
    console: Callable[..., AppTest], buffer: RedisIntake, store: Store, analytics: Analytics
) -> None:
    park(buffer, 2)
    app = console()
    app.button(key="parked_replay").click().run()
    assert any("**2 parked messages**" in m.value for m in app.markdown)
    assert buffer.rejected() == 2  # nothing moves before the confirmation
    confirm(app, "fixed workers deployed (v1.4.2)")
    no_failures(app)
    assert (buffer.rejected(), buffer.depth()) == (0, 2)
    assert any("2 parked messages back in the intake buffer" in t.value for t in app.toast)
    assert not app.get("text_area")  # the dialog is closed
    assert not any("parked" in e.value for e in app.error)  # the alert is gone
    assert not [b for b in app.button if b.key == "parked_replay"]
    action = analytics.operator_actions(limit=1)[0]
    assert (action.actor, action.action, action.target, action.reason) == (
        OPERATOR.actor,
        "replay_intake",
        "intake buffer (2 messages)",
        "fixed workers deployed (v1.4.2)",
    )


def test_a_viewer_sees_parked_messages_but_cannot_put_them_back(
    console: Callable[..., AppTest], buffer: RedisIntake
) -> None:
    park(buffer, 1)
    viewer = auth.Operator("Auditor", "auditor@example.com", auth.AccessMethod.OIDC, False)
    app = console(operator=viewer)
    assert any("1 customer message is parked" in e.value for e in app.error)
    assert app.button(key="parked_replay").disabled


def test_nothing_about_the_intake_buffer_without_redis_or_with_nothing_parked(
    console: Callable[..., AppTest], redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = console()  # the conftest's environment has no REDIS_URL
    no_failures(app)
    assert "intake" not in page_text(app).lower()
    assert not [b for b in app.button if b.key == "parked_replay"]
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    redis.Redis.from_url(redis_server.url).flushall()
    app = console()
    no_failures(app)
    assert "parked" not in page_text(app).lower()
    assert not [b for b in app.button if b.key == "parked_replay"]


def test_redis_down_is_a_clear_message_not_a_traceback(
    console: Callable[..., AppTest], data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")  # nothing listens
    app = console()
    no_failures(app)
    [warning] = [w.value for w in app.warning if "intake buffer" in w.value]
    assert "The intake buffer cannot be read" in warning
    assert "Connection refused" in warning and "docs/runbook.md" in warning
    assert not [b for b in app.button if b.key == "parked_replay"]


def no_failures_but_the_alert(app: AppTest) -> None:
    """no_failures, except the parked alert (an error box by design)."""
    assert not app.exception, [e.value for e in app.exception]
    others = [e.value for e in app.error if "parked in the intake buffer" not in e.value]
    assert not others, others


# -- the pure rules ------------------------------------------------------------------------------
def buffered(**message: object) -> BufferedInbound:
    fields: dict[str, object] = {
        "message_id": 11,
        "conversation_id": 22,
        "account_id": 1,
        "inbox_id": 2,
        "content": CONTENT,
        "created_at": None,
        "contact_id": 3,
        "contact_name": CONTACT,
    }
    return BufferedInbound(
        InboundMessage(**{**fields, **message}),  # type: ignore[arg-type]
        None,
        RECEIVED_AT,
        b"{}",
    )


def test_a_parked_message_keeps_only_what_identifies_it() -> None:
    item = buffered()
    raw = item.encode()
    shown = data.parked_message(Claimed(raw, item))
    assert shown == data.ParkedMessage(22, 11, RECEIVED_AT, len(raw))
    assert CONTENT not in repr(shown) and CONTACT not in repr(shown)


def test_a_header_no_receiver_writes_is_unreadable() -> None:
    odd = buffered(conversation_id="22")  # decodes: the dataclass does not check types
    assert data.parked_message(Claimed(b"x", odd)).problem == (
        "unreadable entry: unexpected header values"
    )
    far = BufferedInbound(buffered().message, None, float("inf"), b"{}")
    assert data.parked_message(Claimed(b"x", far)).received_at is None
    long = data.parked_message(Claimed(b"x", None, "unreadable intake entry: " + "x" * 500))
    assert long.problem is not None and len(long.problem) == data.PROBLEM_MAX_CHARS


def test_parked_alerts() -> None:
    assert data.parked_alerts(None) == []
    assert data.parked_alerts(data.ParkedIntake(0)) == []
    [one] = data.parked_alerts(data.ParkedIntake(1))
    assert (one.level, one.title) == (
        "critical",
        "1 customer message is parked in the intake buffer",
    )
    [down] = data.parked_alerts(data.ParkedIntake(None, error="ConnectionError: refused"))
    assert down.level == "warning" and "ConnectionError: refused" in down.detail


def test_the_parked_alert_comes_before_warnings() -> None:
    stopped = replace(ALIVE, seen_at=ALIVE.seen_at - 3600)
    found = data.alerts(status(workers=(stopped,), parked=data.ParkedIntake(2)))
    assert [(a.level, a.title) for a in found] == [
        ("critical", "2 customer messages are parked in the intake buffer"),
        ("warning", "No worker is alive"),
    ]
