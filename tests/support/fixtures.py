"""Chatwoot's real webhook and API shapes (tests/fixtures/chatwoot, copied from shared/)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CHATWOOT_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "chatwoot"


def chatwoot_fixture(name: str) -> Any:
    """A fixture by its path under tests/fixtures/chatwoot, e.g. "api/create_message.json"."""
    return json.loads((CHATWOOT_FIXTURES / name).read_text())


def lead_form(**overrides: Any) -> dict[str, Any]:
    """A valid lead-form body (the legacy form's field names), with `overrides`."""
    body: dict[str, Any] = {
        "name": "Tan Wei Ming",
        "email": "weiming.tan@example.com",
        "phone": "+6591234567",
        "loanType": "new_purchase",
        "propertyCategory": "hdb",
        "actualIncomes": [6000],
        "actualAges": [35],
        "employmentType": "employed",
    }
    body.update(overrides)
    return body
