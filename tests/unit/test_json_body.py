"""The request-body parser's limits (app/web/json_body.py)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.web.json_body import (
    MAX_ARRAY_ITEMS,
    MAX_DEPTH,
    MAX_INTEGER,
    MAX_STRING_CHARS,
    REPLACEMENT,
    JsonRejected,
    parse_json,
)

# Any text but NUL and surrogates, which are repaired.
text = st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=20)
within_limits = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-MAX_INTEGER, max_value=MAX_INTEGER)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=25,
)


@given(within_limits)
def test_a_body_within_the_limits_parses_as_json_loads_would(value: object) -> None:
    raw = json.dumps(value).encode()
    assert parse_json(raw) == json.loads(raw)


def rejected(raw: bytes) -> JsonRejected:
    with pytest.raises(JsonRejected) as raised:
        parse_json(raw)
    return raised.value


@pytest.mark.parametrize(
    ("raw", "error", "field"),
    [
        (b'{"a": NaN}', "invalid_number", "$.a"),
        (b'{"a": [1, Infinity]}', "invalid_number", "$.a[1]"),
        (b'{"guard": {"window_s": -Infinity}}', "invalid_number", "$.guard.window_s"),
        (b'{"amount": 1e999}', "invalid_number", "$.amount"),
        (b'{"id": 9223372036854775808}', "invalid_number", "$.id"),
        (b'{"id": -9223372036854775808}', "invalid_number", "$.id"),
        (b"[" * 100_000 + b"]" * 100_000, "json_too_deep", "$"),
        (
            b'{"a":' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1),
            "json_too_deep",
            "$" + ".a" * MAX_DEPTH,
        ),
        (b"[" + b",".join([b"0"] * (MAX_ARRAY_ITEMS + 1)) + b"]", "json_too_large", "$"),
        (json.dumps({"c": "x" * (MAX_STRING_CHARS + 1)}).encode(), "json_too_large", "$.c"),
    ],
)
def test_what_no_route_can_take_is_refused_with_its_path(
    raw: bytes, error: str, field: str
) -> None:
    refusal = rejected(raw)
    assert (refusal.error, refusal.field) == (error, field)


def test_the_deepest_allowed_nesting_and_the_largest_integers_pass() -> None:
    assert parse_json(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) is not None
    assert parse_json(json.dumps([MAX_INTEGER, -MAX_INTEGER]).encode()) == [
        MAX_INTEGER,
        -MAX_INTEGER,
    ]


def test_lone_surrogates_and_nul_become_the_replacement_character_keys_included() -> None:
    parsed = parse_json(b'{"content": "hi \\ud800 there\\u0000", "\\udfffkey": ["\\uD83D"]}')
    assert parsed == {
        "content": f"hi {REPLACEMENT} there{REPLACEMENT}",
        f"{REPLACEMENT}key": [REPLACEMENT],
    }
    json.dumps(parsed).encode("utf-8")  # now encodable, and storable in PostgreSQL text
    # A real pair is a character, not two lone halves.
    assert parse_json(b'"\\ud83d\\ude00"') == "\U0001f600"


def test_bytes_that_are_not_json_stay_a_value_error() -> None:
    for raw in (b"", b"{", b"\xff\xfe", b"{'a': 1}"):
        with pytest.raises(ValueError):
            parse_json(raw)
