"""Operator accounts for the console's password login (console/accounts.py)."""

from __future__ import annotations

import pytest

from console.accounts import AccountsError, OperatorAccounts, hash_password, verify_password


def test_a_hash_verifies_its_password_and_nothing_else() -> None:
    encoded = hash_password("correct horse battery")
    assert encoded.startswith("scrypt$16384$8$1$")
    assert verify_password("correct horse battery", encoded)
    assert not verify_password("correct horse battery ", encoded)
    assert not verify_password("", encoded)
    assert hash_password("correct horse battery") != encoded  # a new salt each time


@pytest.mark.parametrize(
    "encoded",
    [
        "",
        "plain-text",
        "scrypt$16384$8$1$c2FsdA==",
        "scrypt$16383$8$1$c2FsdA==$a2V5",  # N not a power of two
        "scrypt$16384$8$1$not base64!$a2V5",
        "bcrypt$16384$8$1$c2FsdA==$a2V5",
        "scrypt$1099511627776$8$1$c2FsdA==$a2V5",  # would need terabytes
    ],
)
def test_a_malformed_hash_never_verifies_and_never_raises(encoded: str) -> None:
    assert not verify_password("anything", encoded)


def test_accounts_match_names_by_case_and_spacing_and_answer_the_configured_name() -> None:
    accounts = OperatorAccounts.from_secrets({"Priya  Raman": hash_password("priya-password")})
    assert accounts.authenticate("priya raman", "priya-password") == "Priya Raman"
    assert accounts.authenticate(" PRIYA RAMAN ", "priya-password") == "Priya Raman"
    assert accounts.authenticate("Priya Raman", "wrong") is None
    assert accounts.authenticate("Wei Ling", "priya-password") is None


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        (["Priya"], "must be a table"),
        ({"Priya": "hunter2hunter2"}, "not a password hash"),
        ({"Priya": 42}, "not a password hash"),
        ({"  ": hash_password("x")}, "empty operator name"),
    ],
)
def test_misconfigured_accounts_say_what_is_wrong(table: object, problem: str) -> None:
    with pytest.raises(AccountsError, match=problem):
        OperatorAccounts.from_secrets(table)


def test_no_table_is_no_accounts() -> None:
    assert not OperatorAccounts.from_secrets(None)
    assert OperatorAccounts.from_secrets({"Priya": hash_password("x")})
