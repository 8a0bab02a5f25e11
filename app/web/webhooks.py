"""POST /webhooks/chatwoot — verify, parse, record, enqueue, answer. Nothing slower."""

from __future__ import annotations

import logging
import time

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from app.domain.events import PayloadError
from app.services.intake import WEBHOOK_COUNTER
from app.web.context import raw_json_body, services

log = logging.getLogger(__name__)

blueprint = Blueprint("webhooks", __name__)


@blueprint.post("/webhooks/chatwoot")
def chatwoot_webhook() -> ResponseReturnValue:
    wired = services()
    rejection = wired.webhook_auth.rejection(
        body=request.get_data(cache=True),
        timestamp=request.headers.get("X-Chatwoot-Timestamp"),
        signature=request.headers.get("X-Chatwoot-Signature"),
        url_token=request.args.get("token"),
        now=time.time(),
    )
    if rejection is not None:
        log.warning("webhook rejected: %s", rejection)
        wired.counters.count(WEBHOOK_COUNTER, "rejected:unauthorized")
        return jsonify(error="unauthorized", detail=rejection), 401
    raw, payload = raw_json_body()
    try:
        result = wired.intake.accept(
            payload,
            raw=raw,
            headers=dict(request.headers),
            delivery_id=request.headers.get("X-Chatwoot-Delivery") or None,
        )
    except PayloadError as exc:
        wired.counters.count(WEBHOOK_COUNTER, "rejected:invalid_payload")
        return jsonify(error="invalid_payload", detail=str(exc)), 422
    body = {"status": result.status, "reason": result.reason}
    if result.job_id:
        body["job_id"] = result.job_id
    if result.route:
        body["route"] = result.route
    return jsonify(body), 200
