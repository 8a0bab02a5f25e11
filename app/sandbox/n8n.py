"""A local stand-in for the legacy n8n "chatwoot-ai-broker" workflow.

The workflow is what ai-broker replaces, gradually: during rollout some conversations are still
forwarded to it, and in shadow mode its reply is compared with the new pipeline's. Like the real
workflow, this one answers inside the webhook request: it waits `reply_delay_ms`, posts its reply
to Chatwoot with a user token (marked `content_attributes.n8n = true` so tests can tell it apart),
then returns the reply in the HTTP response.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import httpx
from flask import Flask, Response, jsonify, request

from app.sandbox.server import SandboxServer, json_object

WEBHOOK_PATH = "/webhook/chatwoot-ai-broker"
QUOTE_CHARS = 60


def workflow_reply(payload: dict[str, Any]) -> str:
    """The workflow's canned answer: greets the customer and quotes their message."""
    sender = payload.get("sender") or {}
    first_name = str(sender.get("name") or "there").split()[0]
    content = str(payload.get("content") or "")
    return (
        f"Hi {first_name}, thanks for your message about “{content[:QUOTE_CHARS]}”. "
        "One of our mortgage specialists will follow up with suitable packages shortly. — NextNest"
    )


def _is_customer_message(payload: dict[str, Any]) -> bool:
    return (
        payload.get("event") == "message_created"
        and payload.get("message_type") == "incoming"
        and not payload.get("private", False)
    )


class N8nSandbox(SandboxServer):
    """`POST /webhook/chatwoot-ai-broker`: replies to incoming public customer messages."""

    name = "n8n"

    def __init__(
        self,
        *,
        chatwoot_url: str | None = None,
        account_id: int = 3,
        api_token: str = "sandbox-user-token",  # noqa: S107 - the Chatwoot sandbox's user token
        reply_delay_ms: float = 0,
        respond_with_reply: bool = True,
        port: int = 0,
        post_timeout_s: float = 10.0,
    ) -> None:
        super().__init__(port=port)
        self._lock = threading.Lock()
        self._defaults = {
            "chatwoot_url": chatwoot_url,
            "account_id": account_id,
            "api_token": api_token,
            "reply_delay_ms": reply_delay_ms,
            "respond_with_reply": respond_with_reply,
        }
        self._config = dict(self._defaults)
        self._received: list[dict[str, Any]] = []
        self._http = httpx.Client(timeout=post_timeout_s)

    # -- Python controls -------------------------------------------------------------------------

    def configure(self, **settings: Any) -> dict[str, Any]:
        """Change any of chatwoot_url, account_id, api_token, reply_delay_ms, respond_with_reply."""
        unknown = sorted(set(settings) - set(self._defaults))
        if unknown:
            raise ValueError(f"unknown setting(s) {unknown}; known: {sorted(self._defaults)}")
        checks = {
            "chatwoot_url": lambda v: v is None or isinstance(v, str),
            "account_id": lambda v: isinstance(v, int) and not isinstance(v, bool),
            "api_token": lambda v: isinstance(v, str) and bool(v),
            "reply_delay_ms": lambda v: (
                isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
            ),
            "respond_with_reply": lambda v: isinstance(v, bool),
        }
        for key, value in settings.items():
            if not checks[key](value):
                raise ValueError(f"{key} has an invalid value: {value!r}")
        with self._lock:
            self._config.update(settings)
            return dict(self._config)

    def config(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._config)

    def received(self) -> list[dict[str, Any]]:
        """Every payload received, with what the workflow did about it."""
        with self._lock:
            return [dict(record) for record in self._received]

    def reset(self) -> None:
        """Forget the received payloads, restore the constructor's config, clear the faults."""
        with self._lock:
            self._received.clear()
            self._config = dict(self._defaults)
        self.faults.reset()

    def _on_stop(self) -> None:
        self._http.close()
        self._http = httpx.Client(timeout=self._http.timeout)

    # -- HTTP ------------------------------------------------------------------------------------

    def _register_routes(self, app: Flask) -> None:
        app.add_url_rule(WEBHOOK_PATH, "workflow", self._workflow, methods=["POST"])
        app.add_url_rule("/_sandbox/config", "config", self._config_route, methods=["GET", "PUT"])
        app.add_url_rule("/_sandbox/received", "received", lambda: jsonify(self.received()))
        app.add_url_rule("/_sandbox/reset", "reset", self._reset_route, methods=["POST"])

    def _workflow(self) -> Response | tuple[Response, int]:
        payload = json_object() or {}
        conversation = payload.get("conversation") or {}
        record: dict[str, Any] = {
            "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "event": payload.get("event"),
            "conversation_id": conversation.get("id"),
            "message_id": payload.get("id"),
            "message_type": payload.get("message_type"),
            "payload": payload,
            "handled": False,
            "reply": None,
            "post_status": None,
            "error": None,
        }
        with self._lock:
            self._received.append(record)
        if not _is_customer_message(payload) or record["conversation_id"] is None:
            return jsonify({"status": "ignored"})
        config = self.config()
        self.pause(config["reply_delay_ms"] / 1000)
        reply = workflow_reply(payload)
        status, error = self._post_reply(config, record["conversation_id"], reply)
        with self._lock:
            record.update(handled=True, reply=reply, post_status=status, error=error)
        if error is not None:
            return jsonify(
                {"code": 0, "message": f"Workflow could not post its reply: {error}"}
            ), 500
        return jsonify({"reply": reply} if config["respond_with_reply"] else {"status": "ok"})

    def _post_reply(
        self, config: dict[str, Any], conversation_id: int, reply: str
    ) -> tuple[int | None, str | None]:
        """POST the reply as an outgoing message; (status, error) where error None = success."""
        if not config["chatwoot_url"]:
            return None, "no chatwoot_url configured"
        url = (
            f"{config['chatwoot_url'].rstrip('/')}/api/v1/accounts/{config['account_id']}"
            f"/conversations/{conversation_id}/messages"
        )
        body = {
            "content": reply,
            "message_type": "outgoing",
            "private": False,
            "content_attributes": {"n8n": True},
        }
        try:
            response = self._http.post(
                url, json=body, headers={"api_access_token": config["api_token"]}
            )
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"
        if response.is_success:
            return response.status_code, None
        return response.status_code, f"Chatwoot answered {response.status_code}: {response.text}"

    def _config_route(self) -> Response | tuple[Response, int]:
        if request.method == "PUT":
            settings = json_object()
            if settings is None:
                return jsonify({"error": "send a JSON object of settings"}), 400
            try:
                self.configure(**settings)
            except ValueError as exc:
                return jsonify({"error": str(exc)}), 400
        return jsonify(self.config())

    def _reset_route(self) -> Response:
        self.reset()
        return jsonify({"status": "reset"})
