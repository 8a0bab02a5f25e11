"""OpenAIReplyGenerator with the real openai SDK against the LLM sandbox: replies, prompts and
fallbacks."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest

from app.adapters.llm import OpenAIReplyGenerator
from app.domain.conversation import ChatTurn
from app.ports.replies import GeneratedReply
from app.sandbox.llm import LLMSandbox

MODEL = "gpt-5-mini"
FALLBACK = "Thanks for your message! I'm having a small technical hiccup, but I'm still here."
SYSTEM_PROMPT = (
    "You are Sarah Wong, a Family Mortgage Consultant at NextNest Mortgage Advisory in Singapore.\n"
    "## Your Personality & Style:\n- Type: balanced\n"
)
HISTORY = (
    ChatTurn(role="user", content="Hi, I'm looking at a 4-room HDB flat."),
    ChatTurn(role="assistant", content="Lovely! Is this your first home?"),
)
NEW_MESSAGE = "Yes, first home. What rates can I get?"


@pytest.fixture(scope="module")
def running_llm() -> Iterator[LLMSandbox]:
    with LLMSandbox(port=0) as running:
        yield running


@pytest.fixture
def llm(running_llm: LLMSandbox) -> LLMSandbox:
    running_llm.reset()
    return running_llm


class RecordingHttp:
    """The SDK's HTTP client with a hook that keeps every request body it sends."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.client = httpx2.Client(event_hooks={"request": [self._record]})

    def _record(self, request: httpx2.Request) -> None:
        request.read()
        self.bodies.append(json.loads(request.content) if request.content else {})


@pytest.fixture
def recording() -> Iterator[RecordingHttp]:
    recorder = RecordingHttp()
    yield recorder
    recorder.client.close()


def sdk_client(url: str, *, http: RecordingHttp | None = None) -> openai.OpenAI:
    # No SDK retries: the pipeline retries jobs itself (and the fallback tests stay fast).
    return openai.OpenAI(
        api_key="sk-sandbox",
        base_url=f"{url}/v1",
        max_retries=0,
        http_client=http.client if http is not None else None,
    )


def generator(llm: LLMSandbox, **options: Any) -> OpenAIReplyGenerator:
    http = options.pop("http", None)
    return OpenAIReplyGenerator(sdk_client(llm.url, http=http), model=MODEL, **options)


def generate(reply_generator: OpenAIReplyGenerator, **overrides: Any) -> GeneratedReply:
    arguments: dict[str, Any] = {
        "system_prompt": SYSTEM_PROMPT,
        "history": HISTORY,
        "customer_messages": [NEW_MESSAGE],
        "fallback_text": FALLBACK,
    }
    return reply_generator.generate(**(arguments | overrides))


# ---------------------------------------------------------------------------------- replies


def test_returns_the_persona_reply(llm: LLMSandbox) -> None:
    reply = generate(generator(llm))

    assert not reply.used_fallback
    assert reply.fallback_reason is None
    assert reply.model == MODEL
    assert reply.latency_ms > 0
    assert reply.text == llm.calls()[0]["reply"]
    assert reply.text.endswith("— Sarah")
    assert "fixed and floating options" in reply.text  # the sandbox's balanced voice
    assert NEW_MESSAGE[:30] in reply.text


def test_sends_system_prompt_history_and_customer_messages_in_order(llm: LLMSandbox) -> None:
    generate(generator(llm), customer_messages=[NEW_MESSAGE, "Also, can I use CPF?"])

    [call] = llm.calls()
    assert call["model"] == MODEL
    assert call["messages"] == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": HISTORY[0].content},
        {"role": "assistant", "content": HISTORY[1].content},
        {"role": "user", "content": NEW_MESSAGE},
        {"role": "user", "content": "Also, can I use CPF?"},
    ]


def test_does_not_repeat_customer_messages_already_at_the_end_of_history(llm: LLMSandbox) -> None:
    history = (*HISTORY, ChatTurn(role="user", content=NEW_MESSAGE))

    generate(generator(llm), history=history)

    messages = llm.calls()[0]["messages"]
    assert [m["content"] for m in messages[1:]] == [turn.content for turn in history]


def test_sends_max_completion_tokens_and_temperature(
    llm: LLMSandbox, recording: RecordingHttp
) -> None:
    generate(generator(llm, http=recording, max_tokens=300, temperature=0.4))

    [body] = recording.bodies
    assert body["max_completion_tokens"] == 300
    assert "max_tokens" not in body
    assert body["temperature"] == 0.4


def test_temperature_none_is_not_sent(llm: LLMSandbox, recording: RecordingHttp) -> None:
    reply = generate(generator(llm, http=recording, temperature=None))

    assert not reply.used_fallback
    assert "temperature" not in recording.bodies[0]


# -------------------------------------------------------------------------------- fallbacks


@pytest.mark.parametrize(
    ("status", "reason"),
    [(500, "server_error"), (503, "server_error"), (429, "rate_limited"), (400, "bad_request")],
)
def test_falls_back_on_http_errors(llm: LLMSandbox, status: int, reason: str) -> None:
    llm.faults.set(fail_next=1, fail_next_status=status)

    reply = generate(generator(llm))

    assert reply == GeneratedReply(
        text=FALLBACK,
        used_fallback=True,
        fallback_reason=reason,
        latency_ms=reply.latency_ms,
        model=MODEL,
    )
    assert llm.calls()[0]["status"] == status


def test_falls_back_on_rate_limit_rate(llm: LLMSandbox) -> None:
    llm.faults.set(rate_limit_rate=1.0)

    reply = generate(generator(llm))

    assert (reply.used_fallback, reply.fallback_reason) == (True, "rate_limited")


def test_falls_back_on_timeout_when_the_model_is_slower_than_timeout_s(llm: LLMSandbox) -> None:
    llm.configure(latency_ms=800)

    reply = generate(generator(llm, timeout_s=0.2))

    assert (reply.text, reply.fallback_reason) == (FALLBACK, "timeout")
    assert reply.latency_ms < 700
    # Let the abandoned request finish, so that it is not recorded during the next test.
    deadline = time.monotonic() + 5
    while not llm.calls() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_falls_back_on_a_blank_completion(llm: LLMSandbox) -> None:
    # The sandbox treats fixed_reply="" as unset, so whitespace stands in for a blank completion.
    llm.configure(fixed_reply="  \n ")

    reply = generate(generator(llm))

    assert (reply.text, reply.fallback_reason) == (FALLBACK, "empty_completion")


def test_falls_back_on_a_rejected_api_key(llm: LLMSandbox) -> None:
    # The sandbox accepts any non-empty key, so OpenAI's 401 is injected as a fault.
    llm.faults.set(fail_next=1, fail_next_status=401)

    reply = generate(generator(llm))

    assert (reply.text, reply.fallback_reason) == (FALLBACK, "auth_error")


def test_falls_back_when_the_server_is_unreachable() -> None:
    with LLMSandbox(port=0) as stopped_soon:
        url = stopped_soon.url
    reply_generator = OpenAIReplyGenerator(sdk_client(url), model=MODEL, timeout_s=2)

    reply = generate(reply_generator)

    assert (reply.text, reply.fallback_reason) == (FALLBACK, "connection_error")


# ------------------------------------------------------------------------------------- ping


def test_ping_lists_models(llm: LLMSandbox) -> None:
    generator(llm).ping()


def test_ping_raises_when_the_key_is_rejected(llm: LLMSandbox) -> None:
    llm.faults.set(fail_next=1, fail_next_status=401)

    with pytest.raises(openai.AuthenticationError):
        generator(llm).ping()
