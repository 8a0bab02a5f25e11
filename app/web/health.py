"""Liveness, readiness, Prometheus metrics and the OpenAPI document."""

from __future__ import annotations

import logging
import time

from flask import Blueprint, Response, jsonify
from flask.typing import ResponseReturnValue

from app.services.guard import HEARTBEAT_STALE_S
from app.web.context import services
from app.web.metrics import render_metrics
from app.web.openapi import DOCUMENT

log = logging.getLogger(__name__)

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def healthz() -> ResponseReturnValue:
    return jsonify(status="ok")


@blueprint.get("/openapi.json")
def openapi() -> ResponseReturnValue:
    return jsonify(DOCUMENT)


@blueprint.get("/readyz")
def readyz() -> ResponseReturnValue:
    wired = services()
    checks: dict[str, str] = {}
    try:
        wired.store.ping()
        checks["store"] = "ok"
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        log.warning("readyz: store down: %s", exc)
        checks["store"] = "down"
    try:
        wired.queue.depth()
        checks["queue"] = "ok"
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        log.warning("readyz: queue down: %s", exc)
        checks["queue"] = "down"
    alive = []
    if checks["store"] == "ok":
        alive = wired.store.live_workers(since=time.time() - HEARTBEAT_STALE_S)
        checks["workers"] = (
            f"{len(alive)} alive" if alive else "none alive: start `ai-broker worker`"
        )
    ready = checks["store"] == "ok" and checks["queue"] == "ok" and bool(alive)
    return jsonify(status="ready" if ready else "not_ready", checks=checks), 200 if ready else 503


@blueprint.get("/metrics")
def metrics() -> ResponseReturnValue:
    wired = services()
    try:
        depth = wired.queue.depth()
    except Exception:  # noqa: BLE001 - the rest of the metrics are still worth serving
        log.warning("metrics: queue depth unavailable")
        depth = {}
    text = render_metrics(
        wired.store,
        depth,
        rollout=wired.rollout.current(),
        circuit=wired.forwarder.breaker.state() if wired.forwarder else None,
    )
    return Response(text, mimetype="text/plain; version=0.0.4")
