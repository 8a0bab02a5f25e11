"""POST /api/conversations — the website's lead form (called by its server, not the browser)."""

from __future__ import annotations

import hmac
import logging

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from app.domain.lead import LeadFormError, parse_lead_form
from app.ports.chatwoot import ChatwootError
from app.web.context import raw_json_body, services

log = logging.getLogger(__name__)

blueprint = Blueprint("leads", __name__)


@blueprint.post("/api/conversations")
def create_conversation() -> ResponseReturnValue:
    wired = services()
    expected = wired.settings.form_token
    if expected and not _bearer_matches(expected):
        return jsonify(error="unauthorized", detail="send Authorization: Bearer <FORM_TOKEN>"), 401
    _, payload = raw_json_body()
    try:
        form = parse_lead_form(payload)
    except LeadFormError as exc:
        errors = [{"field": e.field, "message": e.message} for e in exc.errors]
        return jsonify(error="invalid_lead_form", errors=errors), 422
    if wired.leads is None:
        return jsonify(
            error="chatwoot_not_configured",
            detail="set CHATWOOT_BASE_URL, CHATWOOT_ACCOUNT_ID, CHATWOOT_INBOX_ID and "
            "CHATWOOT_API_TOKEN",
        ), 503
    try:
        result = wired.leads.submit(form)
    except ChatwootError as exc:
        log.warning("lead form: Chatwoot failed: %s", exc)
        status = 503 if exc.retryable else 502
        return jsonify(
            error="chatwoot_unavailable" if exc.retryable else "chatwoot_error",
            detail="Chatwoot did not accept the request; retry later"
            if exc.retryable
            else "Chatwoot refused the request; check the Chatwoot settings",
        ), status
    return jsonify(result.to_json()), 201


def _bearer_matches(expected: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.encode(), expected.encode())
