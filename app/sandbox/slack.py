"""A Slack incoming webhook: accepts `{"text", "attachments"}` posts and keeps them."""

from __future__ import annotations

import threading
from typing import Any

from flask import Flask, Response, jsonify

from app.sandbox.server import SandboxServer, json_object

WEBHOOK_PATH = "/services/T000/B000/sandbox"


class SlackSandbox(SandboxServer):
    name = "slack"

    def __init__(self, *, port: int = 0) -> None:
        super().__init__(port=port)
        self._lock = threading.Lock()
        self._messages: list[dict[str, Any]] = []

    @property
    def webhook_url(self) -> str:
        return f"{self.url}{WEBHOOK_PATH}"

    def messages(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(message) for message in self._messages]

    def _register_routes(self, app: Flask) -> None:
        app.add_url_rule(WEBHOOK_PATH, "incoming_webhook", self._incoming, methods=["POST"])
        app.add_url_rule("/_sandbox/messages", "messages", self._list, methods=["GET"])

    def _incoming(self) -> Response | tuple[str, int]:
        body = json_object()
        if body is None or not isinstance(body.get("text"), str):
            # Slack answers a malformed payload with a plain-text 400.
            return "invalid_payload", 400
        with self._lock:
            self._messages.append(body)
        return Response("ok", mimetype="text/plain")

    def _list(self) -> Response:
        return jsonify(self.messages())
