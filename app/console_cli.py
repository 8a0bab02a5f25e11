"""`ai-broker console`: the Streamlit operations console, as a real `streamlit run` process.

Refuses to start when nobody would have to log in (no CONSOLE_PASSWORD and no OIDC provider in
Streamlit secrets), then replaces this process with Streamlit, so signals from a process manager
(Procfile, systemd) reach it directly. Streamlit's own settings are given as flags: headless, no
error details (no stack trace on any page), no usage statistics, no file watcher.
"""

from __future__ import annotations

import logging
import os
import sys
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path

import console
from app.config import ConfigError, Settings
from console.accounts import AccountsError
from console.auth import access_config, authlib_available, read_secrets, secrets_files

log = logging.getLogger(__name__)

APP = Path(console.__file__).resolve().parent / "main.py"


def streamlit_command(settings: Settings) -> list[str]:
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        f"--server.port={settings.console_port}",
        f"--server.address={settings.host}",
        "--server.headless=true",
        "--client.showErrorDetails=none",
        "--client.toolbarMode=minimal",
        "--browser.gatherUsageStats=false",
        "--server.fileWatcherType=none",
        "--server.runOnSave=false",
        # Endpoints the console does not use stay off, whatever Streamlit's defaults become.
        "--server.enableStaticServing=false",
        "--server.enableAgentApi=false",
        "--server.scriptHealthCheckEnabled=false",
        "--server.enableXsrfProtection=true",
        "--server.enableCORS=true",
        "--server.maxUploadSize=1",
    ]


def check_access(settings: Settings, secrets: Mapping[str, object]) -> None:
    """ConfigError unless the console would ask everyone to log in."""
    try:
        config = access_config(settings, secrets)
    except AccountsError as exc:
        raise ConfigError(f"{exc} (in .streamlit/secrets.toml)") from None
    if not config.configured:
        raise ConfigError(
            "CONSOLE_PASSWORD is not set and no OIDC provider or operator account is configured "
            "in Streamlit secrets ([auth] or [console.operators] in .streamlit/secrets.toml): "
            "the console would be open to anyone who can reach it; set one of them "
            "(see docs/console.md)"
        )
    if config.oidc and not authlib_available():
        raise ConfigError(
            "an OIDC provider is configured ([auth] in secrets.toml) but Authlib is not "
            "installed: pip install 'streamlit[auth]' (or remove [auth] to use CONSOLE_PASSWORD)"
        )
    if not config.oidc and not config.accounts:
        log.warning(
            "console: operators share CONSOLE_PASSWORD, so the audit log records the names they "
            "type; give each operator an account in [console.operators] (docs/console.md)"
        )
    if config.oidc and not (config.allowed_emails or config.allowed_domains):
        log.warning(
            "console: every account the OIDC provider authenticates may log in; set "
            "[console] allowed_emails or allowed_domains in secrets.toml to limit it"
        )


def run_console(
    settings: Settings,
    *,
    environ: Mapping[str, str] | None = None,
    execute: Callable[[str, list[str], dict[str, str]], object] = os.execve,
) -> None:
    """Check access, then become `streamlit run console/app.py` (does not return)."""
    try:
        secrets = read_secrets(secrets_files(APP.parent, Path.cwd()))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"Streamlit secrets could not be read: {exc}") from exc
    check_access(settings, secrets)
    command = streamlit_command(settings)
    log.info(
        "console: http://%s:%d (store: %s)",
        settings.host,
        settings.console_port,
        settings.store_description,
    )
    execute(command[0], command, dict(os.environ if environ is None else environ))
