"""/api/admin/* — migration status, rollout changes, rollback, queue pause (bearer token)."""

from __future__ import annotations

import datetime as dt
import hmac
import time
from dataclasses import asdict, fields, replace
from typing import Any

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from app.domain.health import recommendations
from app.domain.numbers import whole_number
from app.domain.rollout import (
    MAX_ACTOR_CHARS,
    MAX_REASON_CHARS,
    GuardThresholds,
    RolloutChange,
    RolloutError,
    describe,
    guard_value_error,
)
from app.services.guard import HEARTBEAT_STALE_S, pipeline_health
from app.web.context import raw_json_body, services

blueprint = Blueprint("admin", __name__, url_prefix="/api/admin")

DEFAULT_ACTOR = "admin-api"


@blueprint.before_request
def require_admin_token() -> ResponseReturnValue | None:
    expected = services().settings.admin_token
    if not expected:
        return jsonify(error="admin_api_disabled", detail="set ADMIN_TOKEN to enable it"), 403
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), expected.encode()):
        return jsonify(error="unauthorized", detail="send Authorization: Bearer <ADMIN_TOKEN>"), 401
    return None


@blueprint.get("/migration-status")
def migration_status() -> ResponseReturnValue:
    return jsonify(status_report())


@blueprint.put("/rollout")
def set_rollout() -> ResponseReturnValue:
    _, body = raw_json_body()
    errors: list[dict[str, str]] = []
    reason = _reason(body, errors)
    actor = _actor(body, errors)
    percentage = whole_number(body.get("percentage"))
    # Present means a number: `null` would pass as "no change" and still write an audit row.
    if "percentage" in body and (percentage is None or not 0 <= percentage <= 100):
        errors.append({"field": "percentage", "message": "must be a whole number from 0 to 100"})
    for name in ("shadow", "n8n_enabled"):
        if name in body and not isinstance(body[name], bool):
            errors.append({"field": name, "message": "must be true or false"})
    guard = _guard(body.get("guard"), errors) if "guard" in body else None
    known = {"percentage", "shadow", "n8n_enabled", "guard", "reason", "actor"}
    errors.extend({"field": key, "message": "unknown field"} for key in sorted(set(body) - known))
    if not errors and not any(
        key in body for key in ("percentage", "shadow", "n8n_enabled", "guard")
    ):
        errors.append(
            {
                "field": "body",
                "message": "give at least one of percentage, shadow, n8n_enabled, guard",
            }
        )
    if errors:
        return jsonify(error="invalid_rollout", errors=errors), 422
    change = RolloutChange(
        percentage=percentage,
        shadow=body.get("shadow"),
        n8n_enabled=body.get("n8n_enabled"),
        guard=guard,
    )
    try:
        state = services().operations.change_rollout(actor=actor, change=change, reason=reason)
    except RolloutError as exc:
        return jsonify(error="rollout_refused", detail=str(exc)), 422
    return jsonify(rollout=_state_json(state))


@blueprint.post("/rollback")
def rollback() -> ResponseReturnValue:
    _, body = raw_json_body()
    errors: list[dict[str, str]] = []
    reason = _reason(body, errors)
    actor = _actor(body, errors)
    if errors:
        return jsonify(error="invalid_rollback", errors=errors), 422
    try:
        result = services().operations.rollback(actor=actor, reason=reason)
    except RolloutError as exc:
        return jsonify(error="rollback_refused", detail=str(exc)), 409
    return jsonify(rollback=result.to_json(), rollout=_state_json(result.state))


@blueprint.post("/queue/pause")
def pause() -> ResponseReturnValue:
    return _set_paused(True)


@blueprint.post("/queue/resume")
def resume() -> ResponseReturnValue:
    return _set_paused(False)


def _set_paused(paused: bool) -> ResponseReturnValue:
    body: dict[str, Any] = {}
    if request.get_data(cache=True):
        _, body = raw_json_body()
    errors: list[dict[str, str]] = []
    # Optional here, unlike a rollout change: pausing is the first thing to do in an incident.
    given = body.get("reason")
    if given is not None and not isinstance(given, str):
        errors.append({"field": "reason", "message": "must be a string"})
    elif given is not None and len(given) > MAX_REASON_CHARS:
        errors.append({"field": "reason", "message": f"at most {MAX_REASON_CHARS} characters"})
    reason = given.strip() if isinstance(given, str) else ""
    actor = _actor(body, errors)
    if errors:
        return jsonify(error="invalid_reason", errors=errors), 422
    state = services().operations.set_paused(
        actor=actor, paused=paused, reason=reason or ("paused" if paused else "resumed")
    )
    return jsonify(rollout=_state_json(state))


def status_report() -> dict[str, Any]:
    """Everything an operator needs to decide the next migration step (the plan's dashboard)."""
    wired = services()
    state = wired.rollout.current(fresh=True)
    configured = wired.rollout.n8n_configured
    now = time.time()
    health = pipeline_health(wired.store, window_s=state.guard.window_s, now=now)
    circuit = wired.forwarder.breaker.state() if wired.forwarder else None
    try:
        depth: dict[str, int] = wired.queue.depth()
    except Exception:  # noqa: BLE001 - the rest of the report still helps
        depth = {}
    return {
        "timestamp": dt.datetime.fromtimestamp(now, tz=dt.UTC).isoformat(),
        "rollout": _state_json(state),
        "description": describe(state, n8n_configured=configured),
        "recommendations": recommendations(state, health, n8n_configured=configured),
        "n8n": {
            "configured": configured,
            "circuit": None
            if circuit is None
            else {
                "position": circuit.position.value,
                "consecutive_failures": circuit.consecutive_failures,
                "opened_at": circuit.opened_at,
            },
        },
        "health": {
            **asdict(health),
            "failure_rate": round(health.failure_rate, 4),
            "fallback_rate": round(health.fallback_rate, 4),
        },
        "queue": {**depth, "jobs": wired.store.job_state_counts()},
        "workers": [asdict(w) for w in wired.store.live_workers(since=now - HEARTBEAT_STALE_S)],
    }


def _state_json(state: Any) -> dict[str, Any]:
    return asdict(state)


def _reason(body: dict[str, Any], errors: list[dict[str, str]]) -> str:
    reason = body.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        errors.append({"field": "reason", "message": "say why (it goes into the audit log)"})
        return ""
    if len(reason) > MAX_REASON_CHARS:
        errors.append({"field": "reason", "message": f"at most {MAX_REASON_CHARS} characters"})
    return reason.strip()


def _actor(body: dict[str, Any], errors: list[dict[str, str]]) -> str:
    """Who the audit names: the API, and the person the caller says is behind it, if any."""
    actor = body.get("actor")
    if actor is None:
        return DEFAULT_ACTOR
    if not isinstance(actor, str):
        errors.append({"field": "actor", "message": "must be a string"})
        return DEFAULT_ACTOR
    if len(actor) > MAX_ACTOR_CHARS:
        errors.append({"field": "actor", "message": f"at most {MAX_ACTOR_CHARS} characters"})
    return f"{DEFAULT_ACTOR}:{actor.strip()}" if actor.strip() else DEFAULT_ACTOR


def _guard(value: Any, errors: list[dict[str, str]]) -> GuardThresholds | None:
    if not isinstance(value, dict):
        errors.append({"field": "guard", "message": "must be an object"})
        return None
    known = {f.name: f.type for f in fields(GuardThresholds)}
    # Fresh, not the 1 s cache: the other thresholds are written back as they are read here.
    current = services().rollout.current(fresh=True).guard
    changes: dict[str, Any] = {}
    for key, item in value.items():
        if key not in known:
            errors.append({"field": f"guard.{key}", "message": "unknown field"})
        elif key == "enabled":
            if not isinstance(item, bool):
                errors.append({"field": "guard.enabled", "message": "must be true or false"})
            changes[key] = item
        elif (problem := guard_value_error(key, item)) is not None:
            errors.append({"field": f"guard.{key}", "message": problem})
        else:
            changes[key] = int(item) if key == "min_sample" else float(item)
    return replace(current, **changes) if not errors else None
