"""A local stand-in for the legacy n8n "chatwoot-ai-broker" workflow.

The workflow is what ai-broker replaces, gradually: during rollout some conversations are still
forwarded to it, and in shadow mode its reply is compared with the new pipeline's. Like the real
legacy workflow, its webhook node responds immediately (`{"message": "Workflow was started"}`),
and then the workflow runs: it waits `reply_delay_ms` and posts its reply to Chatwoot with its
own user token (Chatwoot's automation user, so the reply's sender is N8N_SENDER `user:31`; marked
`content_attributes.n8n = true` so tests can tell it apart). `respond="when_done"` answers after
the post instead, with the reply in the body, as a "last node" webhook would.

Its failure modes are n8n's: `state="starting"` answers every request 200 with n8n's start-up
page, `state="unregistered"` answers 404 as for a workflow that is not active, and
`post_replies=False` acknowledges but never posts (a disabled Chatwoot node, an expired
credential).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any

import httpx
from flask import Flask, Response, jsonify, request

from app.sandbox.chatwoot.records import AUTOMATION_USER_ID
from app.sandbox.server import SandboxServer, json_object

WEBHOOK_PATH = "/webhook/chatwoot-ai-broker"
QUOTE_CHARS = 60
RUNS_AT_ONCE = 8
RESPONSES = ("immediately", "when_done")
STATES = ("running", "starting", "unregistered")
STARTING_UP_PAGE = (
    "<!DOCTYPE html><html><head><title>n8n</title></head>"
    "<body>n8n is starting up. Please wait</body></html>"
)
WORKFLOW_STARTED = {"message": "Workflow was started"}
# Who the sandbox workflow posts as, for N8N_SENDER.
SENDER = f"user:{AUTOMATION_USER_ID}"


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
        api_token: str = "sandbox-n8n-token",  # noqa: S107 - the Chatwoot sandbox's n8n user
        reply_delay_ms: float = 0,
        respond: str = "immediately",
        state: str = "running",
        post_replies: bool = True,
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
            "respond": respond,
            "state": state,
            "post_replies": post_replies,
        }
        self._config = dict(self._defaults)
        # Workflow runs after an immediate response: at most RUNS_AT_ONCE at a time, as n8n's
        # own execution concurrency limit does; the rest wait their turn.
        self._runs = ThreadPoolExecutor(RUNS_AT_ONCE, thread_name_prefix="n8n-run")
        self._running: list[Future[None]] = []
        self._received: list[dict[str, Any]] = []
        self._http = httpx.Client(timeout=post_timeout_s)

    # -- Python controls -------------------------------------------------------------------------

    def configure(self, **settings: Any) -> dict[str, Any]:
        """Change any of chatwoot_url, account_id, api_token, reply_delay_ms, respond, state,
        post_replies."""
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
            "respond": lambda v: v in RESPONSES,
            "state": lambda v: v in STATES,
            "post_replies": lambda v: isinstance(v, bool),
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

    def drain(self, timeout_s: float = 10.0) -> None:
        """Wait for the workflow runs still posting their replies."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            running = list(self._running)
        for run in running:
            with suppress(FutureTimeout):
                run.result(max(0.0, deadline - time.monotonic()))

    def _on_stop(self) -> None:
        self.drain()
        self._http.close()
        self._http = httpx.Client(timeout=self._http.timeout)

    # -- HTTP ------------------------------------------------------------------------------------

    def _register_routes(self, app: Flask) -> None:
        app.add_url_rule(WEBHOOK_PATH, "workflow", self._workflow, methods=["POST"])
        app.add_url_rule("/_sandbox/config", "config", self._config_route, methods=["GET", "PUT"])
        app.add_url_rule("/_sandbox/received", "received", lambda: jsonify(self.received()))
        app.add_url_rule("/_sandbox/reset", "reset", self._reset_route, methods=["POST"])

    def _workflow(self) -> Response | tuple[Response, int]:
        config = self.config()
        if config["state"] == "starting":
            return Response(STARTING_UP_PAGE, 200, mimetype="text/html")
        if config["state"] == "unregistered":
            return jsonify(
                {
                    "code": 404,
                    "message": f'The requested webhook "POST {WEBHOOK_PATH.rsplit("/", 1)[-1]}" '
                    "is not registered.",
                    "hint": "The workflow must be active for a production URL to run successfully.",
                }
            ), 404
        payload = json_object() or {}
        conversation = payload.get("conversation") or {}
        record: dict[str, Any] = {
            "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "event": payload.get("event"),
            "conversation_id": conversation.get("id"),
            "message_id": payload.get("id"),
            "message_type": payload.get("message_type"),
            "payload": payload,
            "body": request.get_data(as_text=True),
            "headers": {
                name: value
                for name, value in request.headers.items()
                if name.lower().startswith("x-chatwoot-")
            },
            "handled": False,
            "reply": None,
            "post_status": None,
            "error": None,
        }
        with self._lock:
            self._received.append(record)
        if config["respond"] == "immediately":
            with self._lock:
                run = self._runs.submit(self._run, config, payload, record)
                self._running = [r for r in self._running if not r.done()] + [run]
            return jsonify(WORKFLOW_STARTED)
        self._run(config, payload, record)
        if record["error"] is not None:
            return jsonify(
                {"code": 0, "message": f"Workflow could not post its reply: {record['error']}"}
            ), 500
        return jsonify({"reply": record["reply"]} if record["handled"] else {"status": "ok"})

    def _run(self, config: dict[str, Any], payload: dict[str, Any], record: dict[str, Any]) -> None:
        """The workflow after its webhook node: the reply, then the Chatwoot node."""
        if not _is_customer_message(payload) or record["conversation_id"] is None:
            return
        self.pause(config["reply_delay_ms"] / 1000)
        reply = workflow_reply(payload)
        if not config["post_replies"]:
            with self._lock:
                record.update(handled=True, reply=reply, error="Chatwoot node disabled")
            return
        status, error = self._post_reply(config, record["conversation_id"], reply)
        with self._lock:
            record.update(handled=True, reply=reply, post_status=status, error=error)

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
