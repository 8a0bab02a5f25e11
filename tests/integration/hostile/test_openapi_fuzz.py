"""Schemathesis against the receiver's own `/openapi.json`: every operation, with bodies that
follow the document and bodies that break it, each correctly signed or authorised so that the
fuzz reaches the parsers. Every response must conform to the document (status code, content type,
body schema), none may be a 5xx, and a request the receiver rejects leaves the store as it was.
The counts per operation are printed."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from jsonschema import Draft202012Validator
from schemathesis import Case, GenerationMode
from schemathesis.schemas import APIOperation

from app.bootstrap import Services
from app.web import create_app
from app.web.openapi import PATHS, SCHEMAS
from tests.support.hostile import ADMIN_TOKEN, FORM_TOKEN, StoreFingerprint, webhook_headers

EXAMPLES_PER_MODE = 150
# The document itself is what schemathesis loads; `from_wsgi` leaves its own route out.
OPERATIONS = sorted(
    f"{method.upper()} {path}"
    for path, item in PATHS.items()
    for method in item
    if path != "/openapi.json"
)
# Not ready is the truthful answer of a receiver with no worker alive, and the document says so.
DOCUMENTED_5XX = {"GET /readyz": {503}}
# What a response must agree with the document on; the rest of schemathesis's checks judge
# requests it sends itself.
SERVER_ERROR = schemathesis.checks.not_a_server_error
CHECKS = [
    SERVER_ERROR,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
]


@pytest.fixture(scope="module")
def operations(services: Services) -> list[APIOperation]:
    # The document as the receiver serves it, not the Python constant it is built from.
    schema = schemathesis.openapi.from_wsgi("/openapi.json", create_app(services=services))
    return [result.ok() for result in schema.get_all_operations()]


def _credentials(case: Case, body: bytes | None) -> dict[str, str]:
    if case.path == "/webhooks/chatwoot":
        return webhook_headers(body or b"")
    if case.path == "/api/conversations":
        return {"Authorization": f"Bearer {FORM_TOKEN}"}
    if case.path.startswith("/api/admin/"):
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    return {}


def _encoded(case: Case) -> bytes | None:
    if case.body is None or not isinstance(case.body, dict | list | str | int | float | bool):
        return None
    # Our own bytes, so that the signature covers exactly what is sent.
    return json.dumps(case.body).encode()


def _send(client: FlaskClient, case: Case) -> Any:
    body = _encoded(case)
    # Schemathesis's headers (it fuzzes the webhook's), then the real credentials over them.
    headers = {**{k: str(v) for k, v in (case.headers or {}).items()}, **_credentials(case, body)}
    if body is not None:
        headers["Content-Type"] = "application/json"
    return client.open(case.formatted_path, method=case.method, data=body, headers=headers)


def _fuzz(
    client: FlaskClient,
    fingerprint: StoreFingerprint,
    operation: APIOperation,
    mode: GenerationMode,
    counts: Counter[str],
) -> None:
    @settings(
        max_examples=EXAMPLES_PER_MODE,
        deadline=None,
        database=None,
        # The same examples on every run, so a red CI run can be reproduced.
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Case) -> None:
        before = fingerprint.take()
        response = _send(client, case)
        text = response.get_data(as_text=True)
        assert response.status_code < 500 or response.status_code in DOCUMENTED_5XX.get(
            operation.label, set()
        ), text
        assert "Traceback" not in text and 'File "' not in text
        documented_5xx = operation.label in DOCUMENTED_5XX
        checks = [check for check in CHECKS if not documented_5xx or check is not SERVER_ERROR]
        case.validate_response(response, checks=checks)
        if _body_breaks_the_document(case):
            assert response.status_code >= 400, (case.body, text)
        if response.status_code >= 400:
            assert fingerprint.take() == before, (response.status_code, text)
        counts[f"{mode.value} {response.status_code}"] += 1

    run()


def _body_breaks_the_document(case: Case) -> bool:
    """Whether the body sent is one the document says is invalid.

    In negative mode schemathesis breaks one part of the request: often a header, which the real
    credentials then replace; and a mutated body is now and then valid after all. So the body is
    judged against the document itself. A body that is not JSON at all is not sent (_encoded)."""
    if _encoded(case) is None:
        return False
    body = PATHS[case.path][case.method.lower()].get("requestBody")
    if body is None:
        return False
    schema = body["content"]["application/json"]["schema"]
    validator = Draft202012Validator({**schema, "components": {"schemas": SCHEMAS}})
    return not validator.is_valid(case.body)


def _has_inputs(operation: APIOperation) -> bool:
    return bool(list(operation.iter_parameters())) or bool(list(operation.body))


@pytest.mark.parametrize("label", OPERATIONS)
def test_every_operation_answers_as_its_document_says(
    operations: list[APIOperation],
    client: FlaskClient,
    fingerprint: StoreFingerprint,
    report: Callable[[str], None],
    label: str,
) -> None:
    (operation,) = [o for o in operations if o.label == label]
    counts: Counter[str] = Counter()
    for mode in GenerationMode:
        # An operation that takes nothing has no way to break its document.
        if mode is GenerationMode.NEGATIVE and not _has_inputs(operation):
            continue
        _fuzz(client, fingerprint, operation, mode, counts)
    statuses = ", ".join(f"{status}: {n}" for status, n in sorted(counts.items()))
    report(f"schemathesis, {label}: {sum(counts.values())} requests ({statuses}), 0 answered 5xx")
    # Valid requests must get through: a fuzz that is refused at the door tests only the door.
    if label not in DOCUMENTED_5XX:
        assert any(key.startswith("positive 2") for key in counts), counts


def test_the_parametrisation_covers_every_operation(operations: list[APIOperation]) -> None:
    assert sorted(o.label for o in operations) == sorted(OPERATIONS)
