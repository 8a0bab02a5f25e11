"""Hostile bodies, correctly signed or authorised so that they reach the parsers, against every
POST route: never a 5xx, every error a JSON body without a stack trace, and a rejected request
leaves the store as it was. Each route gets at least 2,000 generated requests; the counts are
printed.

The generators aim at what broke the routes before: nesting deep enough to exhaust recursion,
NaN, Infinity and 1e999, integers past 64 bits, lone surrogates and NUL in keys and values,
long strings and arrays, wrong types in every field of a valid body, and plain garbage bytes."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.fixtures import chatwoot_fixture, lead_form
from tests.support.hostile import ADMIN_TOKEN, FORM_TOKEN, StoreFingerprint, webhook_headers

EXAMPLES = 2000

# Strings that have broken parsers, stores, logs or spreadsheets somewhere.
NASTY_TEXT = [
    "\ud800",
    "\udfff",
    "a\ud83dz",
    "\x00",
    "nul\x00inside",
    "\n",
    "line\r\nINFO forged log line",
    "\u2028\u2029",
    "\x1b[31mred",
    '=HYPERLINK("http://x")',
    "@SUM(1)",
    "'; DROP TABLE reply_jobs; --",
    "😀" * 50,
    "x" * 5000,
    "",
    " ",
    "null",
    "+65 9123 4567",
]
texts = st.sampled_from(NASTY_TEXT) | st.text(max_size=30)
numbers = st.sampled_from(
    ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1e308", "9" * 30, "-" + "9" * 25, "0.0"]
)


def _literal(value: Any) -> str:
    return json.dumps(value, ensure_ascii=True)


# JSON *text*: json.dumps cannot write NaN as a value of our choosing, deep nesting or 1e999.
leaves = st.one_of(
    numbers,
    texts.map(_literal),
    st.integers().map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["true", "false", "null", "[]", "{}"]),
)
json_text = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4).map(lambda items: "[" + ",".join(items) + "]"),
        st.lists(st.tuples(texts, children), max_size=4).map(
            lambda pairs: "{" + ",".join(f"{_literal(k)}:{v}" for k, v in pairs) + "}"
        ),
    ),
    max_leaves=12,
)
deep = st.builds(
    lambda depth, opener: (opener * depth) + ("]" * depth if opener == "[" else "1" + "}" * depth),
    st.integers(min_value=20, max_value=5000),
    st.sampled_from(["[", '{"a":']),
)
long_array = st.integers(min_value=10_001, max_value=12_000).map(
    lambda n: "[" + ",".join(["0"] * n) + "]"
)


def replacing(base: dict[str, Any]) -> st.SearchStrategy[bytes]:
    """`base` with one field (or one field of a nested object) replaced by hostile JSON."""

    def build(path: list[str], value: str) -> bytes:
        marker = "__HOSTILE__"
        body = json.loads(json.dumps(base))
        target = body
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = marker
        return json.dumps(body).replace(f'"{marker}"', value).encode()

    paths = [[key] for key in base] + [
        [key, inner] for key, value in base.items() if isinstance(value, dict) for inner in value
    ]
    return st.builds(build, st.sampled_from(paths), json_text | deep | numbers | long_array)


def hostile(base: dict[str, Any]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        replacing(base),
        replacing(base),  # the likeliest to reach deep into a route: twice the weight
        (json_text | deep | long_array).map(str.encode),
        st.binary(max_size=200),
        st.builds(lambda text: json.dumps(text).encode(), texts),
    )


def _check_response(response: Any) -> None:
    text = response.get_data(as_text=True)
    assert response.status_code < 500, text
    assert response.is_json, text
    assert "Traceback" not in text and 'File "' not in text
    if response.status_code >= 400:
        assert "error" in response.json


def _fuzz(
    strategy: st.SearchStrategy[bytes],
    send: Callable[[bytes], Any],
    accepted: Callable[[Any], bool],
    fingerprint: StoreFingerprint,
) -> Counter[str]:
    counts: Counter[str] = Counter()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(body=strategy)
    def run(body: bytes) -> None:
        before = fingerprint.take()
        response = send(body)
        _check_response(response)
        counts[str(response.status_code)] += 1
        if not accepted(response):
            assert fingerprint.take() == before, (response.status_code, response.json)

    run()
    return counts


def _summary(route: str, counts: Counter[str]) -> str:
    statuses = ", ".join(f"{status}: {n}" for status, n in sorted(counts.items()))
    return f"hostile bodies, {route}: {sum(counts.values())} requests ({statuses}), 0 answered 5xx"


def test_the_webhook_route(
    client: FlaskClient, fingerprint: StoreFingerprint, report: Callable[[str], None]
) -> None:
    base = chatwoot_fixture("message_created.incoming_contact.json")

    def send(body: bytes) -> Any:
        return client.post("/webhooks/chatwoot", data=body, headers=webhook_headers(body))

    def accepted(response: Any) -> bool:
        return response.status_code == 200 and response.json.get("status") == "accepted"

    counts = _fuzz(hostile(base), send, accepted, fingerprint)
    report(_summary("POST /webhooks/chatwoot", counts))
    assert sum(counts.values()) >= EXAMPLES
    assert counts["400"] and counts["422"] and counts["200"]


def test_the_lead_form_route(
    client: FlaskClient, fingerprint: StoreFingerprint, report: Callable[[str], None]
) -> None:
    base = lead_form()

    def send(body: bytes) -> Any:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {FORM_TOKEN}"}
        return client.post("/api/conversations", data=body, headers=headers)

    counts = _fuzz(hostile(base), send, lambda r: r.status_code == 201, fingerprint)
    report(_summary("POST /api/conversations", counts))
    assert sum(counts.values()) >= EXAMPLES
    assert counts["400"] and counts["422"]


@pytest.mark.parametrize(
    ("method", "path", "base"),
    [
        (
            "PUT",
            "/api/admin/rollout",
            {"percentage": 0, "reason": "fuzz", "guard": {"window_s": 600}},
        ),
        ("POST", "/api/admin/rollback", {"reason": "fuzz", "actor": "ops"}),
        ("POST", "/api/admin/queue/pause", {"reason": "fuzz", "actor": "ops"}),
    ],
)
def test_the_admin_routes(
    client: FlaskClient,
    fingerprint: StoreFingerprint,
    report: Callable[[str], None],
    method: str,
    path: str,
    base: dict[str, Any],
) -> None:
    def send(body: bytes) -> Any:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {ADMIN_TOKEN}"}
        return client.open(path, method=method, data=body, headers=headers)

    counts = _fuzz(hostile(base), send, lambda r: r.status_code == 200, fingerprint)
    report(_summary(f"{method} {path}", counts))
    assert sum(counts.values()) >= EXAMPLES
    assert counts["400"]
