"""Who may use the console, and who they are (every action is audited under that name).

Two ways in, chosen by configuration:

- OIDC (`st.login`) when a provider is configured in Streamlit secrets (`[auth]`). An optional
  `[console]` section limits who gets in (`allowed_emails`, `allowed_domains`) and who may only
  look (`viewer_emails`): an identity provider such as Google authenticates anyone with an
  account, so a public provider needs an allow-list.
- Otherwise a password login: each operator's own account (`[console.operators]`, name and
  scrypt hash, see console/accounts.py), so the audit's name is one that logged in; or, without
  accounts, the shared `CONSOLE_PASSWORD`, where the name operators give is only what they typed,
  and the audit log says so.

With neither, the console does not open (and `ai-broker console` refuses to start).
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, NoReturn

import streamlit as st

from app.config import Settings
from console.accounts import AccountsError, OperatorAccounts

log = logging.getLogger(__name__)

SESSION_KEY = "console_operator"
MAX_FAILURES_PER_MINUTE = 10
FAILURE_DELAY_S = 1.0


class AccessMethod(StrEnum):
    OIDC = "oidc"
    ACCOUNT = "account"  # an operator's own password
    PASSWORD = "password"  # noqa: S105 - the shared password: the method's name, not a secret


@dataclass(frozen=True)
class Operator:
    name: str
    email: str | None
    method: AccessMethod
    can_act: bool = True  # False: a viewer, who sees everything and changes nothing
    subject: str | None = None  # the OIDC provider's `sub`: stable, unlike the display name

    @property
    def actor(self) -> str:
        """How the audit log names this operator: by what authenticated them."""
        if self.method is AccessMethod.OIDC:
            return f"console:{self.email or f'oidc:{self.subject}'}"
        if self.method is AccessMethod.PASSWORD:
            return f"console:{self.name} (shared password)"
        return f"console:{self.name}"


@dataclass(frozen=True)
class AccessConfig:
    oidc: bool
    oidc_provider: str | None  # None: the single provider configured directly under [auth]
    password: str | None = field(repr=False)
    accounts: OperatorAccounts = field(default_factory=OperatorAccounts)
    allowed_emails: frozenset[str] = frozenset()
    allowed_domains: frozenset[str] = frozenset()
    viewer_emails: frozenset[str] = frozenset()

    @property
    def configured(self) -> bool:
        return self.oidc or bool(self.accounts) or bool(self.password)

    @property
    def restricts(self) -> bool:
        """Whether the allow-lists decide who gets in (by email or its domain)."""
        return bool(self.allowed_emails or self.allowed_domains)

    def admits(self, email: str | None) -> bool:
        """Whether an identity the provider vouched for may use the console."""
        if not self.allowed_emails and not self.allowed_domains:
            return True
        if not email:
            return False
        email = email.lower()
        domain = email.rpartition("@")[2]
        return (
            email in self.allowed_emails
            or email in self.viewer_emails
            or domain in self.allowed_domains
        )


def access_config(settings: Settings, secrets: Mapping[str, Any]) -> AccessConfig:
    oidc, provider = oidc_provider(secrets)
    console = secrets.get("console") or {}
    return AccessConfig(
        oidc=oidc,
        oidc_provider=provider,
        password=settings.console_password,
        accounts=OperatorAccounts.from_secrets(console.get("operators")),
        allowed_emails=_lowered(console.get("allowed_emails")),
        allowed_domains=_lowered(console.get("allowed_domains")),
        viewer_emails=_lowered(console.get("viewer_emails")),
    )


def oidc_provider(secrets: Mapping[str, Any]) -> tuple[bool, str | None]:
    """(configured, provider name) from the `[auth]` secrets: either named provider sections
    (`[auth.google]`) or one provider's settings directly under `[auth]`."""
    auth = secrets.get("auth") or {}
    if not isinstance(auth, Mapping):
        return False, None
    named = sorted(key for key, value in auth.items() if isinstance(value, Mapping))
    if named:
        return True, named[0]
    return bool(auth.get("client_id") and auth.get("server_metadata_url")), None


def password_matches(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def secrets_files(app_dir: Path, cwd: Path) -> list[Path]:
    """Where Streamlit looks for secrets.toml (global, project, next to the app)."""
    return [
        Path.home() / ".streamlit" / "secrets.toml",
        cwd / ".streamlit" / "secrets.toml",
        app_dir / ".streamlit" / "secrets.toml",
    ]


def read_secrets(paths: Sequence[Path]) -> dict[str, Any]:
    """The merged secrets of `paths` (later files win), as Streamlit will read them."""
    merged: dict[str, Any] = {}
    for path in paths:
        if path.is_file():
            with path.open("rb") as handle:
                merged.update(tomllib.load(handle))
    return merged


def authlib_available() -> bool:
    try:
        import authlib  # noqa: F401
    except ImportError:
        return False
    return True


# -- the gate (Streamlit) ----------------------------------------------------------------------
def require_operator(settings: Settings) -> Operator:
    """The logged-in operator; otherwise render the login and stop the script run."""
    try:
        config = access_config(settings, _secrets())
    except AccountsError as exc:
        problem = str(exc)
        _gate(lambda: _misconfigured(problem))
    if not config.configured:
        _gate(_not_configured)
    if config.oidc:
        return _oidc_operator(config)
    operator = st.session_state.get(SESSION_KEY)
    if isinstance(operator, Operator):
        return operator
    _gate(lambda: _password_form(config))
    raise AssertionError("unreachable: the gate stops the run")


def current_operator() -> Operator:
    """The operator of this session. Pages run after the gate, so there is one; every page
    asks all the same, so none can ever render for a session that has not logged in."""
    operator = st.session_state.get(SESSION_KEY)
    if not isinstance(operator, Operator):
        st.stop()
        raise AssertionError("unreachable: st.stop() ends the run")
    return operator


def log_out() -> None:
    operator = st.session_state.pop(SESSION_KEY, None)
    if isinstance(operator, Operator):
        log.info("%s logged out", operator.actor)
        if operator.method is AccessMethod.OIDC:
            st.logout()


def _gate(render: Callable[[], None]) -> NoReturn:
    """Show only `render` (the login), whatever page was asked for, and end the run. The
    navigation is replaced so not even the page names show before login."""
    st.navigation(
        [st.Page(render, title="Log in", url_path="login", default=True)], position="hidden"
    ).run()
    st.stop()
    raise AssertionError("unreachable: st.stop() ends the run")


def _not_configured() -> None:
    _login_page_header()
    st.error(
        "Console access is not configured: give operators accounts ([console.operators] in "
        ".streamlit/secrets.toml), configure an OIDC provider there ([auth]), or set "
        "CONSOLE_PASSWORD. See docs/console.md."
    )


def _misconfigured(problem: str) -> None:
    _login_page_header()
    st.error(f"Console access is misconfigured: {problem} (in .streamlit/secrets.toml).")


def _oidc_login(config: AccessConfig) -> None:
    _login_page_header()
    if not authlib_available():
        st.error("OIDC login needs Authlib: pip install 'streamlit[auth]'.")
        return
    st.button(
        "Log in with single sign-on",
        type="primary",
        icon=":material/login:",
        on_click=st.login,
        args=(config.oidc_provider,) if config.oidc_provider else (),
    )


def _refused(email: str | None) -> None:
    _login_page_header()
    st.error(
        f"{email or 'This account'} is not allowed to use the console. Ask an administrator "
        "to add it to [console] allowed_emails in the console's secrets."
    )
    st.button("Log out", on_click=st.logout)


def _unverified(email: str | None) -> None:
    _login_page_header()
    st.error(
        f"Your identity provider has not confirmed {email or 'the email address of this account'}. "
        "Confirm the address with the provider, then log in again."
    )
    st.button("Log out", on_click=st.logout)


def _email_verified() -> bool:
    verified = st.user.get("email_verified")
    return verified is True or (isinstance(verified, str) and verified.lower() == "true")


def _oidc_operator(config: AccessConfig) -> Operator:
    if not st.user.get("is_logged_in"):
        _gate(lambda: _oidc_login(config))
    email = _claim("email")
    subject = _claim("sub")
    if not email and not subject:
        # Without either the audit could not say who acted; the provider is misconfigured.
        log.warning("refused a login with neither an email nor a subject claim")
        _gate(lambda: _refused(None))
    if config.restricts and not _email_verified():
        # Many providers let anyone put any address on an account; an allow-list by email
        # means something only for addresses the provider has confirmed.
        log.warning("refused %s (the provider did not confirm the address)", email)
        _gate(lambda: _unverified(email))
    if not config.admits(email):
        log.warning("refused %s (not in the allow-list)", email)
        _gate(lambda: _refused(email))
    operator = Operator(
        name=_claim("name") or email or "operator",
        email=email,
        method=AccessMethod.OIDC,
        can_act=(email or "").lower() not in config.viewer_emails,
        subject=subject,
    )
    if st.session_state.get(SESSION_KEY) != operator:
        st.session_state[SESSION_KEY] = operator
        log.info("%s logged in (oidc)", operator.actor)
    return operator


def _password_form(config: AccessConfig) -> None:
    _login_page_header()
    accounts = bool(config.accounts)
    with st.form("login", border=True, width=420):
        name = st.text_input(
            "Your name",
            key="login_name",
            help="Your operator account." if accounts else "Recorded in the audit log.",
        )
        password = st.text_input(
            "Your password" if accounts else "Console password",
            type="password",
            key="login_password",
        )
        submitted = st.form_submit_button("Log in", type="primary", icon=":material/login:")
    if not accounts:
        st.caption(
            "Everyone shares this password, so the audit log records the name you type as "
            "given. Operator accounts record who logged in (docs/console.md)."
        )
    if not submitted:
        return
    throttle, client = _throttle(), _client()
    if throttle.locked(client):
        st.error("Too many failed logins from here. Wait a minute and try again.")
        return
    if not name.strip():
        st.error("Enter your name: it goes into the audit log with every action.")
        return
    operator = _password_operator(config, name, password)
    if operator is None:
        throttle.failed(client)
        log.warning("failed login as %r", name.strip()[:80])
        time.sleep(FAILURE_DELAY_S)
        st.error("Wrong name or password." if accounts else "Wrong password.")
        return
    st.session_state[SESSION_KEY] = operator
    log.info("%s logged in (%s)", operator.actor, operator.method)
    st.rerun()


def _password_operator(config: AccessConfig, name: str, password: str) -> Operator | None:
    """The operator these credentials prove, if any. With accounts configured the shared
    password is not accepted: it would let anyone act under any name again."""
    if config.accounts:
        account = config.accounts.authenticate(name, password)
        if account is None:
            return None
        return Operator(name=account, email=None, method=AccessMethod.ACCOUNT)
    assert config.password is not None
    if not password_matches(password, config.password):
        return None
    return Operator(name=name.strip()[:80], email=None, method=AccessMethod.PASSWORD)


def _login_page_header() -> None:
    st.title("ai-broker console")
    st.caption("Operations console for NextNest's AI mortgage brokers. Log in to continue.")


def _claim(name: str) -> str | None:
    value = st.user.get(name)
    return value if isinstance(value, str) and value else None


def _secrets() -> Mapping[str, Any]:
    try:
        return st.secrets.to_dict()
    except FileNotFoundError:
        return {}


def _lowered(values: object) -> frozenset[str]:
    if not isinstance(values, list | tuple):
        return frozenset()
    return frozenset(str(value).strip().lower() for value in values if str(value).strip())


class _LoginThrottle:
    """Failed logins per client (its address) across every session of this process: after too
    many in a minute that client waits, so a shared password cannot be guessed at network
    speed, and nobody can lock every other operator out by failing on purpose."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._failures: dict[str, list[float]] = {}

    def failed(self, client: str) -> None:
        with self._lock:
            self._failures.setdefault(client, []).append(self._clock())

    def locked(self, client: str) -> bool:
        cutoff = self._clock() - 60
        with self._lock:
            for key in list(self._failures):
                recent = [at for at in self._failures[key] if at > cutoff]
                if recent:
                    self._failures[key] = recent
                else:
                    del self._failures[key]
            return len(self._failures.get(client, ())) >= MAX_FAILURES_PER_MINUTE


def _client() -> str:
    """The client's address as the console's server saw it (behind a proxy, the proxy's)."""
    return st.context.ip_address or "unknown"


@st.cache_resource(show_spinner=False)
def _throttle() -> _LoginThrottle:
    return _LoginThrottle()
