"""Settings.from_env (app/config.py): the settings that need more than their type checked."""

from __future__ import annotations

import pytest

from app.config import ConfigError, Settings
from app.domain.circuit import COOLDOWN_S
from app.domain.events import Sender


def test_the_circuit_cooldown_defaults_to_the_domain_default() -> None:
    assert Settings.from_env({}).n8n_circuit_cooldown_s == COOLDOWN_S == 30.0
    assert Settings().n8n_circuit_cooldown_s == COOLDOWN_S
    # An empty value counts as unset.
    assert Settings.from_env({"N8N_CIRCUIT_COOLDOWN_S": "  "}).n8n_circuit_cooldown_s == 30.0


@pytest.mark.parametrize(
    ("value", "expected"), [("1", 1.0), (" 5 ", 5.0), ("2.5", 2.5), ("90", 90.0), ("600", 600.0)]
)
def test_the_circuit_cooldown_is_read_from_the_environment(value: str, expected: float) -> None:
    settings = Settings.from_env({"N8N_CIRCUIT_COOLDOWN_S": value})
    assert settings.n8n_circuit_cooldown_s == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", "N8N_CIRCUIT_COOLDOWN_S must be a number, not 'abc'"),
        ("30s", "N8N_CIRCUIT_COOLDOWN_S must be a number, not '30s'"),
        ("nan", "N8N_CIRCUIT_COOLDOWN_S must be a finite number"),
        ("inf", "N8N_CIRCUIT_COOLDOWN_S must be a finite number"),
        ("0", "N8N_CIRCUIT_COOLDOWN_S must be at least 1, not 0"),
        ("0.5", "N8N_CIRCUIT_COOLDOWN_S must be at least 1, not 0.5"),
        ("-30", "N8N_CIRCUIT_COOLDOWN_S must be at least 1, not -30"),
        ("601", "N8N_CIRCUIT_COOLDOWN_S must be at most 600, not 601"),
    ],
)
def test_a_bad_circuit_cooldown_is_a_configuration_error(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"N8N_CIRCUIT_COOLDOWN_S": value})
    assert str(raised.value) == message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://chatwoot.example.com/", "https://chatwoot.example.com"),
        ("http://127.0.0.1:3000", "http://127.0.0.1:3000"),
        ("https://example.com/chatwoot/", "https://example.com/chatwoot"),
    ],
)
def test_the_chatwoot_url_loses_its_trailing_slash(value: str, expected: str) -> None:
    assert Settings.from_env({"CHATWOOT_BASE_URL": value}).chatwoot_base_url == expected


@pytest.mark.parametrize(
    "value", ["chatwoot.example.com", "ftp://chatwoot.example.com", "https://"]
)
def test_a_chatwoot_url_that_is_not_http_is_a_configuration_error(value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"CHATWOOT_BASE_URL": value})
    assert str(raised.value) == (
        "CHATWOOT_BASE_URL must be an http(s) URL such as https://chatwoot.example.com, "
        f"not {value!r}"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [("user:31", Sender("user", 31)), (" agent_bot:7 ", Sender("agent_bot", 7)), ("", None)],
)
def test_n8n_sender_is_a_chatwoot_agent_or_agent_bot(value: str, expected: Sender | None) -> None:
    assert Settings.from_env({"N8N_SENDER": value}).n8n_sender == expected


@pytest.mark.parametrize("value", ["31", "user:", "user:abc", "contact:5", "agent:3"])
def test_a_bad_n8n_sender_says_what_to_set(value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"N8N_SENDER": value})
    assert str(raised.value).startswith("N8N_SENDER: expected user:<id> or agent_bot:<id>")
    assert "agent bot (agent_bot:<id>) whose token the n8n workflow posts" in str(raised.value)
