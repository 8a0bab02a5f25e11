"""The traffic generator plays scripted customers against the Chatwoot sandbox."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from app.sandbox.chatwoot import ChatwootSandbox
from app.sandbox.control import ChatwootSandboxControl
from app.sandbox.scripts import SCRIPTS, script_by_key
from app.sandbox.traffic import TrafficGenerator

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

FORM_TOKEN = "form-token-for-tests"
LEAD_KEYS = {
    "name",
    "email",
    "phone",
    "loanType",
    "propertyCategory",
    "actualIncomes",
    "actualAges",
    "employmentType",
}


@pytest.fixture
def chatwoot() -> Iterator[ChatwootSandbox]:
    with ChatwootSandbox() as sandbox:
        yield sandbox


class LeadForm:
    """Stands in for ai-broker's `POST /api/conversations`: opens the conversation in Chatwoot."""

    def __init__(self, chatwoot: ChatwootSandbox) -> None:
        self.chatwoot = chatwoot
        self.bodies: list[dict[str, Any]] = []
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.port}/api/conversations"
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def _app(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        return self._answer(Request(environ))(environ, start_response)

    def _answer(self, request: Request) -> Response:
        if request.headers.get("Authorization") != f"Bearer {FORM_TOKEN}":
            return Response('{"error": "unauthorized"}', status=401)
        body = json.loads(request.get_data())
        self.bodies.append(body)
        contact, conversation = self.chatwoot.create_lead_conversation(
            body["name"], body["email"], body["phone"]
        )
        created = {"conversation_id": conversation["id"], "contact_id": contact["id"]}
        return Response(json.dumps(created), status=201, content_type="application/json")

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def test_scripts_cover_the_cases_the_brokers_must_handle() -> None:
    assert len(SCRIPTS) >= 15
    assert len({s.key for s in SCRIPTS}) == len(SCRIPTS)
    assert all(len(s.turns) >= 3 for s in SCRIPTS)
    assert {s.property_category for s in SCRIPTS} == {
        "hdb",
        "ec",
        "private",
        "landed",
        "commercial",
    }
    assert {s.loan_type for s in SCRIPTS} == {"new_purchase", "refinance", "commercial"}
    assert any("real person" in turn for s in SCRIPTS for turn in s.turns)
    assert sum(s.expects_handoff for s in SCRIPTS) >= 3
    form = script_by_key("hdb_refinance_cash_out").lead_form()
    assert set(form) == LEAD_KEYS
    assert all(re.fullmatch(r"\+65[89]\d{7}", s.phone) for s in SCRIPTS)
    employment = {"employed", "self_employed", "contract", "unemployed", "retired"}
    assert {s.employment_type for s in SCRIPTS} <= employment


def test_three_conversations_play_directly_in_the_sandbox(chatwoot: ChatwootSandbox) -> None:
    report = TrafficGenerator(chatwoot, rng_seed=7).run(3, pace_s=(0.01, 0.01))
    assert report.errors == 0, report.error_details
    assert report.conversations_started == 3
    conversations = chatwoot.conversations()
    assert sorted(c["id"] for c in conversations) == sorted(report.conversation_ids)
    customer_turns = sum(1 for c in conversations for m in c["messages"] if m["message_type"] == 0)
    assert customer_turns == report.messages_sent > 0


def test_lead_form_path_over_http_control(chatwoot: ChatwootSandbox) -> None:
    form = LeadForm(chatwoot)
    try:
        with ChatwootSandboxControl(chatwoot.url) as control:
            generator = TrafficGenerator(
                control, lead_form_url=form.url, form_token=FORM_TOKEN, rng_seed=1
            )
            report = generator.run(3, pace_s=(0.01, 0.01))
        assert report.errors == 0, report.error_details
        assert report.conversations_started == 3 and len(form.bodies) == 3
        assert all(set(body) == LEAD_KEYS for body in form.bodies)
        assert len({body["email"] for body in form.bodies}) == 3
        assert all(re.fullmatch(r"\+65[89]\d{7}", body["phone"]) for body in form.bodies)
        assert report.messages_sent == sum(
            1 for c in chatwoot.conversations() for m in c["messages"] if m["message_type"] == 0
        )
    finally:
        form.close()


def test_errors_are_counted_and_a_stop_event_ends_the_run(chatwoot: ChatwootSandbox) -> None:
    form = LeadForm(chatwoot)
    try:
        refused = TrafficGenerator(chatwoot, lead_form_url=form.url, form_token="wrong")
        report = refused.run(2, pace_s=(0.0, 0.0))
        assert report.errors == 2 and report.conversations_started == 0
        assert "401" in report.error_details[0]
    finally:
        form.close()
    stop = threading.Event()
    stop.set()
    stopped = TrafficGenerator(chatwoot).run(5, pace_s=(10.0, 10.0), stop_event=stop)
    assert stopped.conversations_started == 0 and stopped.messages_sent == 0
    with pytest.raises(ValueError, match="pace_s"):
        TrafficGenerator(chatwoot).run(1, pace_s=(2.0, 1.0))
