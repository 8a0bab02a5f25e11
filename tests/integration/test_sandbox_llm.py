"""The LLM sandbox is OpenAI-compatible: the real SDK works against it, errors included."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from app.sandbox.control import LLMSandboxControl
from app.sandbox.llm import LLMSandbox

SYSTEM_PROMPT = (
    "You are Michelle Chen, a Senior Investment Mortgage Specialist at NextNest Mortgage "
    "Advisory in Singapore.\n\n## Your Personality & Style:\n- Type: aggressive\n"
    "- Tone: confident"
)

CUSTOMER = "I own a condo in Bishan and want a second unit for rental yield. What LTV can I get?"


@pytest.fixture
def llm() -> Iterator[LLMSandbox]:
    with LLMSandbox() as sandbox:
        yield sandbox


@pytest.fixture
def client(llm: LLMSandbox) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{llm.url}/v1", api_key="x", max_retries=0, timeout=5)


def chat(client: openai.OpenAI, system: str = SYSTEM_PROMPT, user: str = CUSTOMER) -> str:
    completion = client.chat.completions.create(
        model="gpt-5-mini",
        messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
    )
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.choices[0].finish_reason == "stop"
    assert completion.choices[0].message.role == "assistant"
    assert completion.usage is not None
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    return completion.choices[0].message.content or ""


def test_reply_speaks_in_the_persona_voice(client: openai.OpenAI, llm: LLMSandbox) -> None:
    reply = chat(client)
    assert reply.startswith(f"Thanks for your message about “{CUSTOMER[:60]}”.")
    assert "won't wait" in reply  # aggressive
    assert reply.endswith("— Michelle")
    conservative = chat(
        client,
        SYSTEM_PROMPT.replace("aggressive", "conservative").replace("Michelle Chen", "Grace Lim"),
    )
    assert "step by step" in conservative and conservative.endswith("— Grace")
    assert chat(client) == reply  # deterministic
    [first, *_] = llm.calls()
    assert first["model"] == "gpt-5-mini"
    assert first["messages"][1]["content"] == CUSTOMER
    assert first["status"] == 200 and first["latency_ms"] >= 0


def test_models_and_auth_errors_use_openai_shapes(llm: LLMSandbox, client: openai.OpenAI) -> None:
    assert "gpt-5-mini" in [m.id for m in client.models.list()]
    response = httpx.post(f"{llm.url}/v1/chat/completions", json={"model": "m", "messages": []})
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_api_key"
    assert error["param"] is None and error["message"]


def test_faults_surface_as_sdk_exceptions(llm: LLMSandbox, client: openai.OpenAI) -> None:
    llm.faults.set(fail_next=1, fail_next_status=429)
    with pytest.raises(openai.RateLimitError) as limited:
        chat(client)
    assert limited.value.response.headers["retry-after"] == "1"
    assert limited.value.code == "rate_limit_exceeded"
    llm.faults.set(fail_next=1)
    with pytest.raises(openai.InternalServerError):
        chat(client)
    assert chat(client)
    assert [c["status"] for c in llm.calls()] == [429, 500, 200]


def test_timeout_fault_makes_the_client_time_out_and_is_released_by_reset(
    llm: LLMSandbox,
) -> None:
    llm.faults.set(timeout_rate=1.0, hang_s=30)
    quick = openai.OpenAI(base_url=f"{llm.url}/v1", api_key="x", max_retries=0, timeout=0.3)
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        chat(quick)
    assert time.monotonic() - started < 5
    llm.faults.reset()


def test_configuration_over_http(llm: LLMSandbox, client: openai.OpenAI) -> None:
    with LLMSandboxControl(llm.url) as control:
        control.configure(fixed_reply="Fixed.", latency_ms=120)
        started = time.monotonic()
        assert chat(client) == "Fixed."
        assert time.monotonic() - started >= 0.12
        control.configure(fixed_reply=None, latency_ms=0)
        assert chat(client).endswith("— Michelle")
        assert control.calls()[0]["latency_ms"] >= 120
        control.set_faults(error_rate=1.0, error_status=503)
        with pytest.raises(openai.APIStatusError) as failed:
            chat(client)
        assert failed.value.status_code == 503
        control.reset()
        assert control.calls() == [] and control.faults()["error_rate"] == 0
        bad = httpx.put(f"{llm.url}/_sandbox/config", json={"temperature": 2})
        assert bad.status_code == 400
