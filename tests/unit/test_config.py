"""Settings.from_env (app/config.py): parsing and checking of N8N_CIRCUIT_COOLDOWN_S."""

from __future__ import annotations

import pytest

from app.config import ConfigError, Settings
from app.domain.circuit import COOLDOWN_S


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
