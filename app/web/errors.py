"""Every error is a JSON body `{"error": ...}`; no route ever answers with a stack trace."""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from app.store.base import StoreError
from app.web.context import BadRequestBody

log = logging.getLogger(__name__)


def register(app: Flask) -> None:
    @app.errorhandler(BadRequestBody)
    def bad_body(exc: BadRequestBody) -> ResponseReturnValue:
        body = {"error": exc.error, "detail": exc.detail}
        if exc.field is not None:
            body["field"] = exc.field
        return jsonify(body), exc.status

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> ResponseReturnValue:
        name = (exc.name or "error").lower().replace(" ", "_")
        return jsonify(error=name, detail=exc.description), exc.code or 500

    @app.errorhandler(StoreError)
    def store_error(exc: StoreError) -> ResponseReturnValue:
        log.error("store unavailable: %s", exc)
        # 500, not 503: Chatwoot's agent bots retry a 429 or a 500 only
        # (docs/chatwoot-contract.md §3).
        return jsonify(error="store_unavailable", detail="not recorded; retry later"), 500

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> ResponseReturnValue:
        log.exception("unhandled error")
        return jsonify(error="internal_error", detail="the request could not be processed"), 500
