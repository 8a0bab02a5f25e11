"""How alike two replies are: word-level, order-aware, case- and punctuation-blind (0..1)."""

from __future__ import annotations

import re
from difflib import SequenceMatcher

_WORD = re.compile(r"[\w$%.,]+", re.UNICODE)


def words(text: str) -> list[str]:
    return [w.strip(".,").lower() for w in _WORD.findall(text) if w.strip(".,")]


def similarity(first: str, second: str) -> float:
    a, b = words(first), words(second)
    if not a and not b:
        return 1.0
    return round(SequenceMatcher(None, a, b, autojunk=False).ratio(), 4)
