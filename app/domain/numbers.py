"""Numbers as JSON bodies carry them."""

from __future__ import annotations


def whole_number(value: object) -> int | None:
    """An int, or a float with no fraction (JSON Schema's "integer": JavaScript has only one
    number type, so a form may send 47.0); None for anything else, booleans included."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None
