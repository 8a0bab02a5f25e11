"""The Flask receiver: Chatwoot webhooks, lead forms, health and metrics."""

from __future__ import annotations

from flask import Flask

from app.bootstrap import Services, build_services
from app.config import Settings
from app.web import admin, errors, health, leads, webhooks

MAX_BODY_BYTES = 1024 * 1024
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
    app.register_blueprint(webhooks.blueprint)
    app.register_blueprint(leads.blueprint)
    app.register_blueprint(health.blueprint)
    app.register_blueprint(admin.blueprint)
    return app
