"""JSON forms of domain values the store keeps (shared by every backend)."""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from typing import Any

from app.domain.rollout import GuardThresholds, RolloutState


def rollout_to_dict(state: RolloutState) -> dict[str, Any]:
    return asdict(state)


def guard_to_json(guard: GuardThresholds) -> str:
    return json.dumps(asdict(guard), sort_keys=True)


def guard_from_json(text: str | None) -> GuardThresholds:
    if not text:
        return GuardThresholds()
    data = json.loads(text)
    known = {f.name for f in fields(GuardThresholds)}
    return GuardThresholds(**{k: v for k, v in data.items() if k in known})
