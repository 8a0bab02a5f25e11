"""A local OpenAI-compatible chat-completions server whose replies show which persona spoke.

The reply pipeline builds a persona system prompt ("You are <Name>, a <title> …" with the persona
type in it) and sends it with the recent history. This sandbox answers deterministically from that
prompt, so a test can tell from the reply alone that the right broker, with the right temperament,
answered the right customer message. Errors and rate limits come back in OpenAI's own shapes, so
the real `openai` SDK raises its real exceptions.
"""

from __future__ import annotations

import math
import re
import threading
import time
import uuid
from typing import Any

from flask import Flask, Response, g, jsonify, request

from app.sandbox.faults import Fault
from app.sandbox.server import SandboxServer, elapsed_ms, json_object

MODELS = ("gpt-5-mini", "gpt-5", "gpt-4o-mini", "gpt-4.1-mini")
QUOTE_CHARS = 60

_PERSONA_LINE = re.compile(r"You are (?P<name>[^,\n]+),")
_TYPE_PATTERNS = (
    re.compile(r"\bType:\s*(aggressive|balanced|conservative)\b", re.IGNORECASE),
    re.compile(r"\b(aggressive|balanced|conservative)\b[^\n]*\bStyle\b", re.IGNORECASE),
    re.compile(r"\b(aggressive|balanced|conservative)\b", re.IGNORECASE),
)
_VOICE = {
    "aggressive": "Rates like these won't wait, so let's secure the strongest package for you "
    "this week",
    "balanced": "Let's weigh the fixed and floating options side by side so you can decide "
    "with confidence",
    "conservative": "There's no rush at all; we'll take this step by step and check every "
    "number before you commit",
}
_DEFAULT_VOICE = "I'll look into the options that fit your situation"
_QUESTIONS = (
    "Could you tell me your outstanding loan amount and remaining tenure?",
    "Could you tell me roughly what your monthly household income is?",
    "Could you tell me when you are hoping to complete the purchase or refinance?",
    "Could you tell me whether you prefer a fixed or a floating rate?",
)


def _text(message: dict[str, Any]) -> str:
    """A message's text, whether `content` is a string or a list of content parts."""
    content = message.get("content")
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")


def persona_reply(messages: list[dict[str, Any]]) -> str:
    """The deterministic reply for a chat: persona name and type come from the system prompt."""
    system = next((_text(m) for m in messages if m.get("role") in ("system", "developer")), "")
    last_user = next((_text(m) for m in reversed(messages) if m.get("role") == "user"), "")
    persona = _PERSONA_LINE.search(system)
    name = persona.group("name").strip() if persona else "Your NextNest broker"
    first_name = name.split()[0] if persona else "NextNest"
    kind = next(
        (match.group(1).lower() for p in _TYPE_PATTERNS if (match := p.search(system))), None
    )
    voice = _VOICE.get(kind or "", _DEFAULT_VOICE)
    question = _QUESTIONS[sum(map(ord, last_user)) % len(_QUESTIONS)]
    opening = (
        f"Thanks for your message about “{last_user[:QUOTE_CHARS]}”."
        if last_user
        else "Thanks for getting in touch."
    )
    return f"{opening} {voice}. {question} — {first_name}"


def _estimate_tokens(text: str) -> int:
    """About four characters a token: close enough for usage numbers that look plausible."""
    return max(1, math.ceil(len(text) / 4))


def _openai_error(
    status: int, message: str, error_type: str, code: str | None, param: str | None = None
) -> Response:
    response = jsonify(
        {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    )
    response.status_code = status
    return response


class LLMSandbox(SandboxServer):
    """`POST /v1/chat/completions` and `GET /v1/models`, non-streaming, any non-empty API key."""

    name = "llm"

    def __init__(
        self, *, port: int = 0, latency_ms: float = 0, fixed_reply: str | None = None
    ) -> None:
        super().__init__(port=port)
        self._lock = threading.Lock()
        self._latency_ms = latency_ms
        self._fixed_reply = fixed_reply
        self._calls: list[dict[str, Any]] = []

    # -- Python controls -------------------------------------------------------------------------

    def configure(self, **settings: Any) -> dict[str, Any]:
        """Set `latency_ms` (reply delay) and/or `fixed_reply` (None: persona replies again)."""
        unknown = sorted(set(settings) - {"latency_ms", "fixed_reply"})
        if unknown:
            raise ValueError(f"unknown setting(s) {unknown}; known: ['fixed_reply', 'latency_ms']")
        latency = settings.get("latency_ms", self._latency_ms)
        if isinstance(latency, bool) or not isinstance(latency, (int, float)) or latency < 0:
            raise ValueError(f"latency_ms must be a non-negative number, got {latency!r}")
        fixed = settings.get("fixed_reply", self._fixed_reply)
        if fixed is not None and not isinstance(fixed, str):
            raise ValueError(f"fixed_reply must be a string or null, got {fixed!r}")
        with self._lock:
            self._latency_ms, self._fixed_reply = latency, fixed
        return self.config()

    def config(self) -> dict[str, Any]:
        with self._lock:
            return {"latency_ms": self._latency_ms, "fixed_reply": self._fixed_reply}

    def calls(self) -> list[dict[str, Any]]:
        """Every chat-completion request: model, messages, latency_ms, status (and the reply)."""
        with self._lock:
            return [dict(call) for call in self._calls]

    def reset(self) -> None:
        """Forget the calls, restore the default config and clear the faults."""
        with self._lock:
            self._calls.clear()
            self._latency_ms, self._fixed_reply = 0, None
        self.faults.reset()

    # -- HTTP ------------------------------------------------------------------------------------

    def _register_routes(self, app: Flask) -> None:
        app.add_url_rule(
            "/v1/chat/completions", "chat_completions", self._chat_completions, methods=["POST"]
        )
        app.add_url_rule("/v1/models", "models", self._models, methods=["GET"])
        app.add_url_rule("/_sandbox/config", "config", self._config_route, methods=["GET", "PUT"])
        app.add_url_rule("/_sandbox/calls", "calls", lambda: jsonify(self.calls()))
        app.add_url_rule("/_sandbox/reset", "reset", self._reset_route, methods=["POST"])
        app.after_request(self._record_call)

    def _fault_response(self, fault: Fault) -> Response:
        if fault.kind == "rate_limit":
            response = _openai_error(
                429,
                "Rate limit reached for requests per min (RPM): Limit 500, Used 500, Requested 1. "
                "Please try again in 1s.",
                "requests",
                "rate_limit_exceeded",
            )
            response.headers["retry-after"] = "1"
            return response
        if fault.status >= 500:
            return _openai_error(
                fault.status,
                "The server had an error while processing your request. Sorry about that!",
                "server_error",
                None,
            )
        return _openai_error(fault.status, "Injected sandbox error.", "invalid_request_error", None)

    @staticmethod
    def _authorized() -> bool:
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and bool(key.strip())

    @staticmethod
    def _unauthorized() -> Response:
        return _openai_error(
            401,
            "Incorrect API key provided. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            "invalid_api_key",
        )

    def _chat_completions(self) -> Response:
        if not self._authorized():
            return self._unauthorized()
        body = json_object()
        g.llm_request = body
        if body is None:
            return _openai_error(
                400,
                "We could not parse the JSON body of your request.",
                "invalid_request_error",
                None,
            )
        messages = body.get("messages")
        if (
            not isinstance(messages, list)
            or not messages
            or not all(isinstance(m, dict) for m in messages)
        ):
            return _openai_error(
                400,
                "Missing required parameter: 'messages'.",
                "invalid_request_error",
                "missing_required_parameter",
                "messages",
            )
        if not body.get("model"):
            return _openai_error(
                400, "you must provide a model parameter", "invalid_request_error", None, "model"
            )
        if body.get("stream"):
            return _openai_error(
                400,
                "The LLM sandbox does not stream; send stream=false.",
                "invalid_request_error",
                None,
                "stream",
            )
        config = self.config()
        self.pause(config["latency_ms"] / 1000)
        content = config["fixed_reply"] or persona_reply(messages)
        g.llm_reply = content
        prompt_tokens = sum(_estimate_tokens(_text(m)) for m in messages)
        completion_tokens = _estimate_tokens(content)
        return jsonify(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:29]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": content,
                            "refusal": None,
                            "annotations": [],
                        },
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
                "service_tier": "default",
                "system_fingerprint": "fp_sandbox",
            }
        )

    def _models(self) -> Response:
        if not self._authorized():
            return self._unauthorized()
        created = 1_700_000_000
        return jsonify(
            {
                "object": "list",
                "data": [
                    {"id": model, "object": "model", "created": created, "owned_by": "system"}
                    for model in MODELS
                ],
            }
        )

    def _record_call(self, response: Response) -> Response:
        if request.path == "/v1/chat/completions":
            body = g.get("llm_request")
            if not isinstance(body, dict):  # answered by a fault or auth before being parsed
                parsed = request.get_json(silent=True, force=True)
                body = parsed if isinstance(parsed, dict) else {}
            call = {
                "model": body.get("model"),
                "messages": body.get("messages"),
                "latency_ms": round(elapsed_ms(), 1),
                "status": response.status_code,
                "reply": g.get("llm_reply"),
            }
            with self._lock:
                self._calls.append(call)
        return response

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
