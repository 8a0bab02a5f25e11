"""The Flask receiver: Chatwoot webhooks, lead forms, health and metrics."""

from __future__ import annotations

import io

from flask import Flask, request
from werkzeug.exceptions import RequestEntityTooLarge

from app.bootstrap import Services, build_services
from app.config import Settings
from app.web import admin, errors, health, leads, webhooks
from app.web.json_body import MAX_BODY_BYTES

EXTENSION_KEY = "ai_broker"


def create_app(settings: Settings | None = None, services: Services | None = None) -> Flask:
    """App factory: settings from the environment unless given; services wired from settings."""
    settings = settings or (services.settings if services else Settings.from_env())
    services = services or build_services(settings)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions[EXTENSION_KEY] = services
    errors.register(app)
    app.before_request(_buffer_chunked_body)
    app.register_blueprint(webhooks.blueprint)
    app.register_blueprint(leads.blueprint)
    app.register_blueprint(health.blueprint)
    app.register_blueprint(admin.blueprint)
    return app


def _buffer_chunked_body() -> None:
    """A chunked body (no Content-Length) is read here, up to the limit: werkzeug would cut it
    at MAX_BODY_BYTES without a word, and the route would then refuse a truncated body as a bad
    signature or bad JSON instead of answering 413."""
    environ = request.environ
    if request.content_length is not None or not environ.get("wsgi.input_terminated"):
        return
    body = environ["wsgi.input"].read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        raise RequestEntityTooLarge()
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    del environ["wsgi.input_terminated"]
