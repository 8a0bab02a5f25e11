"""The login gate: password (constant-time) or OIDC via st.login, and the refusal to open with
neither; plus `ai-broker console` refusing to start without a login."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app import console_cli
from app.config import ConfigError, Settings
from app.console_cli import check_access, run_console, streamlit_command
from console import auth
from console.accounts import hash_password
from tests.console.conftest import MAIN, PASSWORD, TIMEOUT_S, no_failures

OIDC = {
    "auth": {
        "redirect_uri": "http://localhost:8501/oauth2callback",
        "cookie_secret": "a-long-random-cookie-secret-for-tests",
        "google": {
            "client_id": "client",
            "client_secret": "secret",
            "server_metadata_url": "https://accounts.google.com/.well-known/openid-configuration",
        },
    },
    "console": {"allowed_domains": ["nextnest.sg"], "viewer_emails": ["auditor@nextnest.sg"]},
}


def fresh() -> AppTest:
    return AppTest.from_file(str(MAIN), default_timeout=TIMEOUT_S)


def log_in(app: AppTest, name: str, password: str) -> AppTest:
    app.text_input(key="login_name").input(name)
    app.text_input(key="login_password").input(password)
    return app.button[0].click().run()


def titles(app: AppTest) -> list[str]:
    return [t.value for t in app.title]


def test_nothing_but_the_login_before_a_password_login(data_dir: Path) -> None:
    app = fresh().run()
    assert titles(app) == ["ai-broker console"]
    assert "Overview" not in titles(app)
    assert not app.metric  # no page content leaks before login


def test_wrong_password_is_refused(data_dir: Path) -> None:
    app = log_in(fresh().run(), "Mallory", "not-the-password")
    assert [e.value for e in app.error] == ["Wrong password."]
    assert auth.SESSION_KEY not in app.session_state
    assert "Overview" not in titles(app)


def test_a_name_is_required_for_the_audit_log(data_dir: Path) -> None:
    app = log_in(fresh().run(), "  ", PASSWORD)
    assert "audit log" in app.error[0].value
    assert auth.SESSION_KEY not in app.session_state


def test_right_password_opens_the_console_as_that_operator(data_dir: Path) -> None:
    app = log_in(fresh().run(), "Wei Ling", PASSWORD)
    no_failures(app)
    assert "Overview" in titles(app)
    operator = app.session_state[auth.SESSION_KEY]
    # A shared password proves nothing about the name, and the audit log says so.
    assert operator.actor == "console:Wei Ling (shared password)"
    assert operator.method is auth.AccessMethod.PASSWORD
    assert "Everyone shares this password" in " ".join(c.value for c in fresh().run().caption)


ACCOUNTS = {"console": {"operators": {"Wei Ling": hash_password("wei-ling-own-password")}}}


def with_accounts() -> AppTest:
    app = fresh()
    app.secrets = ACCOUNTS
    return app.run()


def test_an_operator_account_logs_in_under_its_configured_name(data_dir: Path) -> None:
    app = log_in(with_accounts(), "  wei   LING ", "wei-ling-own-password")
    no_failures(app)
    assert "Overview" in titles(app)
    operator = app.session_state[auth.SESSION_KEY]
    assert (operator.actor, operator.method) == ("console:Wei Ling", auth.AccessMethod.ACCOUNT)


@pytest.mark.parametrize(
    ("name", "password"),
    [
        pytest.param("Wei Ling", "wrong-password-here", id="wrong password"),
        pytest.param("Mallory", "wei-ling-own-password", id="unknown name"),
        pytest.param("Wei Ling", PASSWORD, id="the shared password"),
    ],
)
def test_with_accounts_only_an_accounts_own_password_gets_in(
    data_dir: Path, name: str, password: str
) -> None:
    app = log_in(with_accounts(), name, password)
    assert [e.value for e in app.error] == ["Wrong name or password."]
    assert auth.SESSION_KEY not in app.session_state


def test_a_malformed_account_says_what_to_fix(data_dir: Path) -> None:
    app = fresh()
    app.secrets = {"console": {"operators": {"Wei Ling": "plain-text-password"}}}
    app.run()
    assert "hash-password" in app.error[0].value and "Traceback" not in app.error[0].value
    assert not app.text_input
    with pytest.raises(ConfigError, match="not a password hash"):
        check_access(Settings(), {"console": {"operators": {"Wei Ling": "plain-text-password"}}})


def test_console_does_not_open_without_any_login_configured(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONSOLE_PASSWORD")
    app = fresh().run()
    assert "Console access is not configured" in app.error[0].value
    assert not app.text_input


def test_oidc_shows_single_sign_on_when_logged_out(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth, "authlib_available", lambda: True)
    app = fresh()
    app.secrets = OIDC
    app.user = {"is_logged_in": False}
    app.run()
    assert [b.label for b in app.button] == ["Log in with single sign-on"]
    assert not app.text_input  # no password form when OIDC is configured


def test_oidc_without_authlib_says_what_to_install(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth, "authlib_available", lambda: False)
    app = fresh()
    app.secrets = OIDC
    app.user = {"is_logged_in": False}
    app.run()
    assert "streamlit[auth]" in app.error[0].value
    assert not app.button


def test_oidc_user_in_the_allowed_domain_is_the_operator(data_dir: Path) -> None:
    app = fresh()
    app.secrets = OIDC
    app.user = {
        "is_logged_in": True,
        "email": "Priya.Nair@nextnest.sg",
        "email_verified": True,
        "name": "Priya Nair",
    }
    app.run()
    no_failures(app)
    operator = app.session_state[auth.SESSION_KEY]
    assert operator.actor == "console:Priya.Nair@nextnest.sg"
    assert operator.method is auth.AccessMethod.OIDC and operator.can_act


def test_oidc_without_an_email_is_audited_by_its_subject(data_dir: Path) -> None:
    app = fresh()
    app.secrets = {"auth": OIDC["auth"]}  # no allow-list, so no email is needed to get in
    app.user = {"is_logged_in": True, "sub": "108234567", "name": "Anyone At All"}
    app.run()
    no_failures(app)
    assert app.session_state[auth.SESSION_KEY].actor == "console:oidc:108234567"


def test_oidc_with_neither_email_nor_subject_is_refused(data_dir: Path) -> None:
    app = fresh()
    app.secrets = {"auth": OIDC["auth"]}
    app.user = {"is_logged_in": True, "name": "Nobody In Particular"}
    app.run()
    assert "not allowed" in app.error[0].value
    assert auth.SESSION_KEY not in app.session_state


def test_oidc_user_outside_the_allow_list_is_refused(data_dir: Path) -> None:
    app = fresh()
    app.secrets = OIDC
    app.user = {
        "is_logged_in": True,
        "email": "someone@gmail.com",
        "email_verified": True,
        "name": "Someone",
    }
    app.run()
    assert "not allowed to use the console" in app.error[0].value
    assert "Overview" not in titles(app)


@pytest.mark.parametrize("verified", [None, False, "false"])
def test_an_allowed_address_the_provider_has_not_confirmed_is_refused(
    data_dir: Path, verified: object
) -> None:
    """Anyone can put priya.nair@nextnest.sg on an account at some providers; the allow-list
    admits only addresses the provider says it confirmed."""
    app = fresh()
    app.secrets = OIDC
    user = {"is_logged_in": True, "email": "priya.nair@nextnest.sg", "name": "Priya"}
    app.user = user if verified is None else {**user, "email_verified": verified}
    app.run()
    assert "has not confirmed priya.nair@nextnest.sg" in app.error[0].value
    assert auth.SESSION_KEY not in app.session_state
    assert "Overview" not in titles(app)


def test_oidc_viewer_sees_pages_but_cannot_act(data_dir: Path) -> None:
    app = fresh()
    app.secrets = OIDC
    app.user = {
        "is_logged_in": True,
        "email": "auditor@nextnest.sg",
        "email_verified": True,
        "name": "Auditor",
    }
    app.run()
    app.switch_page("views/rollout.py").run()
    no_failures(app)
    assert app.slider(key="rollout_pct").disabled
    assert app.button(key="rollback").disabled


def test_failed_logins_lock_out_only_the_client_that_failed() -> None:
    now = [1000.0]
    throttle = auth._LoginThrottle(clock=lambda: now[0])
    for _ in range(auth.MAX_FAILURES_PER_MINUTE):
        assert not throttle.locked("203.0.113.9")
        throttle.failed("203.0.113.9")
    assert throttle.locked("203.0.113.9")
    assert not throttle.locked("198.51.100.4")  # every other operator still gets in
    now[0] += 61
    assert not throttle.locked("203.0.113.9")


def test_password_comparison() -> None:
    assert auth.password_matches("s3cret", "s3cret")
    assert not auth.password_matches("s3cret ", "s3cret")
    assert not auth.password_matches("", "s3cret")


def test_oidc_provider_from_secrets() -> None:
    assert auth.oidc_provider(OIDC) == (True, "google")
    flat = {"auth": {"client_id": "x", "server_metadata_url": "https://idp/.well-known"}}
    assert auth.oidc_provider(flat) == (True, None)
    assert auth.oidc_provider({"auth": {"redirect_uri": "x"}}) == (False, None)
    assert auth.oidc_provider({}) == (False, None)


def test_allow_list() -> None:
    config = auth.access_config(Settings(), OIDC)
    assert config.admits("wei.ling@NEXTNEST.sg")
    assert config.admits("auditor@nextnest.sg")
    assert not config.admits("wei.ling@nextnest.sg.evil.com")
    assert not config.admits(None)
    assert auth.access_config(Settings(), {"auth": OIDC["auth"]}).admits("anyone@gmail.com")


def test_console_command_refuses_without_a_login(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="CONSOLE_PASSWORD is not set"):
        check_access(Settings(), {})
    check_access(Settings(console_password="x"), {})
    monkeypatch.setattr(console_cli, "authlib_available", lambda: False)
    with pytest.raises(ConfigError, match="Authlib"):
        check_access(Settings(console_password="x"), OIDC)
    monkeypatch.setattr(console_cli, "authlib_available", lambda: True)
    check_access(Settings(), OIDC)


def test_run_console_execs_streamlit_with_safe_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    calls: list[tuple[str, list[str], dict[str, str]]] = []
    settings = Settings(console_password="x", console_port=8600, host="0.0.0.0")
    run_console(settings, environ={"A": "1"}, execute=lambda *call: calls.append(call))
    program, argv, env = calls[0]
    assert argv == streamlit_command(settings) and program == argv[0]
    assert argv[1:4] == ["-m", "streamlit", "run"] and argv[4].endswith("console/main.py")
    for flag in (
        "--server.port=8600",
        "--server.address=0.0.0.0",
        "--server.headless=true",
        "--client.showErrorDetails=none",
        "--server.enableStaticServing=false",
        "--server.enableAgentApi=false",
        "--server.enableXsrfProtection=true",
    ):
        assert flag in argv
    assert env == {"A": "1"}


def test_run_console_refuses_before_exec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    executed: Callable[..., object] = lambda *call: pytest.fail("must not exec")  # noqa: E731
    with pytest.raises(ConfigError):
        run_console(Settings(), execute=executed)


@pytest.mark.parametrize("page", ["overview", "brokers", "compare", "rollout", "jobs"])
def test_no_page_renders_before_login(data_dir: Path, page: str) -> None:
    app = fresh().run()
    with pytest.raises(ValueError, match=r"Known pages: \[.Log in.\]"):
        app.switch_page(f"views/{page}.py")  # only the login page exists before login
    assert not app.metric and not app.dataframe


def test_console_says_what_to_do_when_the_store_does_not_answer(
    console: Callable[..., AppTest], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A PostgreSQL store that nobody listens on: the console explains, with no traceback.
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:1/none")
    app = console()
    assert not app.exception
    assert "The store did not answer" in app.error[0].value
    assert "ai-broker doctor" in app.error[0].value
    assert not app.metric
