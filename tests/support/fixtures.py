"""Chatwoot's real webhook and API shapes (tests/fixtures/chatwoot, copied from shared/)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CHATWOOT_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "chatwoot"


def chatwoot_fixture(name: str) -> Any:
    """A fixture by its path under tests/fixtures/chatwoot, e.g. "api/create_message.json"."""
    return json.loads((CHATWOOT_FIXTURES / name).read_text())
