"""Request bodies parsed as JSON with limits, so no body can crash a route or the store.

`json.loads` alone accepts what later code cannot take: nesting deep enough to exhaust the
recursion limit (RecursionError in the parser or in any walk of the result), `NaN`, `Infinity`
and `1e999` (which become floats that break arithmetic and comparisons), integers too large for
a database column, and strings with lone surrogates (`"\\ud800"`) or NUL, which cannot be encoded
as UTF-8 or stored in PostgreSQL text.

Structural violations are refused with the path of the offending value. Text is repaired
instead: a lone surrogate or a NUL becomes U+FFFD in the parsed values, because a customer
message must never be refused over one character; the raw bytes (what signatures cover and what
n8n is forwarded) are left exactly as they came.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

MAX_BODY_BYTES = 1024 * 1024  # Flask's MAX_CONTENT_LENGTH, chunked bodies included
MAX_DEPTH = 32  # Chatwoot's deepest webhook payload nests 5 levels
MAX_STRING_CHARS = 200_000  # Chatwoot caps a message at 150,000 characters
MAX_ARRAY_ITEMS = 10_000
MAX_INTEGER = 2**63 - 1  # a PostgreSQL bigint
_UNENCODABLE = re.compile("[\x00\ud800-\udfff]")
# How NUL and surrogates can appear in JSON text at all (raw ones are invalid UTF-8 or JSON).
_UNENCODABLE_ESCAPE = re.compile(rb"\\u(?:0000|d[89a-f])", re.IGNORECASE)
REPLACEMENT = "\ufffd"


@dataclass(frozen=True)
class JsonRejected(Exception):
    """Why a body was refused: a stable code, the value's path (`$.a.b[3]`) and what to do."""

    error: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def parse_json(raw: bytes) -> Any:
    """The parsed body, or JsonRejected. Raises ValueError for bytes that are not JSON.

    Most bodies take the fast path, a walk that checks containers and numbers only; the full
    walk, which also checks and repairs strings and names the path of what it refuses, runs
    when that finds something or the raw bytes call for it."""
    try:
        value = json.loads(raw, parse_constant=float)
    except RecursionError:
        raise _too_deep("$") from None
    if len(raw) > MAX_STRING_CHARS or _UNENCODABLE_ESCAPE.search(raw) or not _plain(value):
        return _checked(value)
    return value


def _too_deep(path: str) -> JsonRejected:
    return JsonRejected("json_too_deep", path, f"nested more than {MAX_DEPTH} levels deep")


def _plain(root: Any) -> bool:
    """Whether every container and number is within the limits (strings aside)."""
    pending: list[tuple[Any, int]] = [([root], -1)]  # the root as a child, at depth 0
    while pending:
        value, depth = pending.pop()
        if depth >= MAX_DEPTH or (isinstance(value, list) and len(value) > MAX_ARRAY_ITEMS):
            return False
        for item in value.values() if isinstance(value, dict) else value:
            kind = type(item)
            if kind is dict or kind is list:
                pending.append((item, depth + 1))
            elif (kind is int and abs(item) > MAX_INTEGER) or (
                kind is float and not math.isfinite(item)
            ):
                return False
    return True


def _checked(root: Any) -> Any:
    """`root` with every value checked and every string repaired, without recursion."""
    result: list[Any] = [None]
    # (value, path, depth, the container to put the checked value in, its key or index there)
    pending: list[tuple[Any, str, int, Any, Any]] = [(root, "$", 0, result, 0)]
    while pending:
        value, path, depth, parent, slot = pending.pop()
        if isinstance(value, dict | list) and depth >= MAX_DEPTH:
            raise _too_deep(path)
        if isinstance(value, dict):
            checked: dict[str, Any] = {}
            parent[slot] = checked
            for key, item in value.items():
                clean_key = _clean_text(key, path)
                checked[clean_key] = None
                pending.append((item, f"{path}.{clean_key[:40]}", depth + 1, checked, clean_key))
        elif isinstance(value, list):
            if len(value) > MAX_ARRAY_ITEMS:
                raise JsonRejected(
                    "json_too_large", path, f"at most {MAX_ARRAY_ITEMS:,} items in an array"
                )
            items: list[Any] = [None] * len(value)
            parent[slot] = items
            pending.extend(
                (item, f"{path}[{i}]", depth + 1, items, i) for i, item in enumerate(value)
            )
        elif isinstance(value, str):
            parent[slot] = _clean_text(value, path)
        elif isinstance(value, bool) or value is None:
            parent[slot] = value
        elif isinstance(value, int):
            if abs(value) > MAX_INTEGER:
                raise JsonRejected("invalid_number", path, "an integer outside the 64-bit range")
            parent[slot] = value
        else:
            if not math.isfinite(value):
                raise JsonRejected(
                    "invalid_number", path, "must be a finite number (not NaN, Infinity or 1e999)"
                )
            parent[slot] = value
    return result[0]


def _clean_text(text: str, path: str) -> str:
    if len(text) > MAX_STRING_CHARS:
        raise JsonRejected(
            "json_too_large", path, f"at most {MAX_STRING_CHARS:,} characters in a string"
        )
    return _UNENCODABLE.sub(REPLACEMENT, text)
