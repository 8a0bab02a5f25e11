"""Broker replies from an OpenAI-compatible chat-completions API, with a fallback that never fails.

The pipeline must always have something to send: any LLM problem (timeout, connection, rate limit,
5xx, bad key, bad request, a blank completion or a refusal) yields the caller's fallback text with a
short, stable reason code instead of an exception.

The caller builds the `openai.OpenAI` client. Give it a small `max_retries` (0 or 1): the reply
pipeline retries whole jobs itself, and every SDK retry adds up to `timeout_s` to the worst case.

The request goes through the SDK's generic `post` rather than `chat.completions.create`: `create`
first walks every message against the SDK's TypedDict schemas (`maybe_transform`), which cost more
CPU than the rest of the call together (about 9 ms for a 20-turn history on the project machine).
Our messages are already plain dicts in the wire shape, so the body is sent as built; timeouts,
retries, authentication, error classes and response parsing are still the SDK's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import openai
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam

from app.domain.conversation import ChatTurn
from app.ports.replies import GeneratedReply

logger = logging.getLogger(__name__)


class OpenAIReplyGenerator:
    """The reply generator port (app/ports/replies.py) over an OpenAI-compatible API: one broker
    reply per call with the configured model."""

    def __init__(
        self,
        client: openai.OpenAI,
        *,
        model: str,
        timeout_s: float = 20.0,
        max_tokens: int = 500,
        temperature: float | None = 0.7,
    ) -> None:
        """`temperature=None` leaves it out of the request (gpt-5 models accept only the default).

        `max_tokens` is sent as `max_completion_tokens`, which every current model accepts.
        """
        self._client = client
        self._model = model
        self._timeout_s = timeout_s
        self._max_tokens = max_tokens
        self._temperature = temperature
        # What `create` passes for chat completions: the per-call timeout and bearer auth.
        self._options: openai.RequestOptions = {
            "timeout": timeout_s,
            "security": {"bearer_auth": True},
        }

    def generate(
        self,
        *,
        system_prompt: str,
        history: Sequence[ChatTurn],
        customer_messages: Sequence[str],
        fallback_text: str,
    ) -> GeneratedReply:
        """The reply to `customer_messages`, or `fallback_text` if the model cannot give one."""
        messages = build_messages(system_prompt, history, customer_messages)
        started = time.perf_counter()
        try:
            completion = self._complete(messages)
        except openai.OpenAIError as exc:
            reason = _reason_for(exc)
            logger.warning(
                "llm call failed: reason=%s model=%s error=%s status=%s after %.0f ms",
                reason,
                self._model,
                type(exc).__name__,
                getattr(exc, "status_code", None),
                _ms_since(started),
            )
            return self._fallback(fallback_text, reason, started)

        text, problem = _reply_text(completion)
        if problem is not None:
            logger.warning(
                "llm gave no usable reply: reason=%s model=%s after %.0f ms",
                problem,
                self._model,
                _ms_since(started),
            )
            return self._fallback(fallback_text, problem, started)
        latency_ms = _ms_since(started)
        logger.debug("llm reply: model=%s chars=%s in %.0f ms", self._model, len(text), latency_ms)
        return GeneratedReply(
            text=text,
            used_fallback=False,
            fallback_reason=None,
            latency_ms=latency_ms,
            model=self._model,
        )

    def _complete(self, messages: list[ChatCompletionMessageParam]) -> ChatCompletion:
        body: dict[str, Any] = {
            "model": self._model,
            "messages": messages,
            "max_completion_tokens": self._max_tokens,
        }
        if self._temperature is not None:
            body["temperature"] = self._temperature
        return self._client.post(
            "/chat/completions", body=body, cast_to=ChatCompletion, options=self._options
        )

    def ping(self) -> None:
        """A cheap authenticated call for `ai-broker doctor`; raises the SDK's error on failure."""
        self._client.models.list(timeout=self._timeout_s)

    def _fallback(self, fallback_text: str, reason: str, started: float) -> GeneratedReply:
        return GeneratedReply(
            text=fallback_text,
            used_fallback=True,
            fallback_reason=reason,
            latency_ms=_ms_since(started),
            model=self._model,
        )


def build_messages(
    system_prompt: str, history: Sequence[ChatTurn], customer_messages: Sequence[str]
) -> list[ChatCompletionMessageParam]:
    """System prompt, then history oldest first, then one user message per new customer message.

    Callers may pass a history that already ends with the new customer messages (it was read from
    Chatwoot after they arrived); then they are not repeated. Blank customer messages are dropped.
    """
    new = [m for m in customer_messages if m.strip()]
    tail = list(history)[-len(new) :] if new else []
    already_in_history = (
        bool(new)
        and len(tail) == len(new)
        and all(
            t.role == "user" and t.content.strip() == m.strip()
            for t, m in zip(tail, new, strict=True)
        )
    )
    messages: list[ChatCompletionMessageParam] = [{"role": "system", "content": system_prompt}]
    for turn in history:
        if turn.role == "user":
            messages.append({"role": "user", "content": turn.content})
        else:
            messages.append({"role": "assistant", "content": turn.content})
    if not already_in_history:
        messages.extend({"role": "user", "content": m} for m in new)
    return messages


def _reply_text(completion: ChatCompletion) -> tuple[str, str | None]:
    """The reply text and None, or "" and the reason it is unusable."""
    choices = getattr(completion, "choices", None) or []
    if not choices:
        return "", "empty_completion"
    choice = choices[0]
    message = getattr(choice, "message", None)
    if message is not None and getattr(message, "refusal", None):
        return "", "refusal"
    content = getattr(message, "content", None)
    text = content.strip() if isinstance(content, str) else ""
    if getattr(choice, "finish_reason", None) == "content_filter":
        return "", "content_filter"
    if not text:
        return "", "empty_completion"
    if getattr(choice, "finish_reason", None) == "length":
        # A cut-off reply still reads better than the generic fallback; note it for tuning.
        logger.warning("llm reply hit max_completion_tokens and was cut off")
    return text, None


def _reason_for(exc: openai.OpenAIError) -> str:
    """A short stable code for an SDK error (used in metrics, logs and the ledger)."""
    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, openai.APIConnectionError):
        return "connection_error"
    if isinstance(exc, openai.RateLimitError):
        return "rate_limited"
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return "auth_error"
    if isinstance(exc, openai.APIStatusError):
        return "server_error" if exc.status_code >= 500 else "bad_request"
    if isinstance(exc, openai.APIResponseValidationError):
        return "bad_response"
    return "llm_error"


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
