"""Configuration: the one place that reads the environment (and `.env`).

Every setting has a documented default (docs/configuration.md). A missing or invalid value
raises `ConfigError` naming the variable, so a process stops at start with one clear line.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dotenv import dotenv_values

from app.domain.circuit import COOLDOWN_S
from app.domain.events import Sender
from app.domain.rollout import RolloutState


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the variable and what to do."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path(".ai-broker")
    redis_url: str | None = field(default=None, repr=False)
    supabase_url: str | None = None
    supabase_service_role_key: str | None = field(default=None, repr=False)
    supabase_db_url: str | None = field(default=None, repr=False)
    database_url: str | None = field(default=None, repr=False)
    database_pool_size: int = 10
    database_pool_mode: str | None = None  # session | transaction; None: from the port

    chatwoot_base_url: str | None = None
    chatwoot_account_id: int | None = None
    chatwoot_inbox_id: int | None = None
    chatwoot_api_token: str | None = field(default=None, repr=False)
    chatwoot_bot_token: str | None = field(default=None, repr=False)
    chatwoot_webhook_secret: str | None = field(default=None, repr=False)
    webhook_token: str | None = field(default=None, repr=False)
    allow_unauthenticated_webhooks: bool = False

    openai_api_key: str | None = field(default=None, repr=False)
    openai_base_url: str | None = None
    openai_model: str = "gpt-5-mini"
    llm_timeout_s: float = 20.0
    chatwoot_timeout_s: float = 10.0
    job_lease_s: float = 30.0

    n8n_webhook_url: str | None = None
    # Who the n8n workflow posts its replies as; only its messages are n8n's replies.
    n8n_sender: Sender | None = None
    n8n_timeout_s: float = 3.0
    # A forwarded message without n8n's reply after this long is answered by the new pipeline.
    n8n_reply_timeout_s: float = 60.0
    n8n_circuit_cooldown_s: float = COOLDOWN_S
    enable_ai_broker: bool = True
    rollout_percentage: int = 0
    rollout_shadow: bool = False

    host: str = "127.0.0.1"
    port: int = 8000
    console_port: int = 8501
    web_concurrency: int = 2
    worker_concurrency: int = 32
    queue_rate_limit: float = 10.0
    response_delay_scale: float = 1.0

    admin_token: str | None = field(default=None, repr=False)
    form_token: str | None = field(default=None, repr=False)
    allow_open_lead_form: bool = False
    console_password: str | None = field(default=None, repr=False)
    slack_webhook_url: str | None = field(default=None, repr=False)

    log_level: str = "INFO"
    log_format: str = "text"

    @property
    def store_path(self) -> Path:
        return self.data_dir / "store.db"

    @property
    def queue_path(self) -> Path:
        return self.data_dir / "queue.db"

    @property
    def uses_postgres(self) -> bool:
        """The store on PostgreSQL over psycopg (DATABASE_URL wins over SUPABASE_URL)."""
        return bool(self.database_url)

    @property
    def uses_supabase(self) -> bool:
        """The store on Supabase's REST API (only when no DATABASE_URL is set)."""
        return bool(not self.database_url and self.supabase_url and self.supabase_service_role_key)

    @property
    def store_description(self) -> str:
        """Which store, for logs and `doctor` (never a credential)."""
        if self.uses_postgres:
            return "PostgreSQL (DATABASE_URL)"
        if self.uses_supabase:
            return f"Supabase {self.supabase_url}"
        return f"SQLite {self.store_path}"

    @property
    def chatwoot_configured(self) -> bool:
        return bool(
            self.chatwoot_base_url
            and self.chatwoot_account_id is not None
            and self.chatwoot_api_token
        )

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, dotenv_path: Path | None = None
    ) -> Settings:
        """Build settings from `environ` (default: os.environ over `./.env`)."""
        if environ is None:
            path = dotenv_path if dotenv_path is not None else Path.cwd() / ".env"
            file_values = {k: v for k, v in dotenv_values(path).items() if v is not None}
            environ = {**file_values, **os.environ}
        env = _Env(environ)
        settings = cls(
            data_dir=Path(env.text("DATA_DIR") or ".ai-broker"),
            redis_url=env.text("REDIS_URL"),
            supabase_url=env.text("SUPABASE_URL"),
            supabase_service_role_key=env.text("SUPABASE_SERVICE_ROLE_KEY"),
            supabase_db_url=env.text("SUPABASE_DB_URL"),
            database_url=env.postgres_url("DATABASE_URL"),
            database_pool_size=env.integer("DATABASE_POOL_SIZE", 10, minimum=1, maximum=200) or 10,
            database_pool_mode=env.choice("DATABASE_POOL_MODE", ("session", "transaction")),
            chatwoot_base_url=env.http_url("CHATWOOT_BASE_URL"),
            chatwoot_account_id=env.integer("CHATWOOT_ACCOUNT_ID", None, minimum=1),
            chatwoot_inbox_id=env.integer("CHATWOOT_INBOX_ID", None, minimum=1),
            chatwoot_api_token=env.text("CHATWOOT_API_TOKEN"),
            chatwoot_bot_token=env.text("CHATWOOT_BOT_TOKEN"),
            chatwoot_webhook_secret=env.text("CHATWOOT_WEBHOOK_SECRET"),
            webhook_token=env.text("WEBHOOK_TOKEN"),
            allow_unauthenticated_webhooks=env.boolean("ALLOW_UNAUTHENTICATED_WEBHOOKS", False),
            openai_api_key=env.text("OPENAI_API_KEY"),
            openai_base_url=env.text("OPENAI_BASE_URL"),
            openai_model=env.text("OPENAI_MODEL") or "gpt-5-mini",
            llm_timeout_s=env.number("LLM_TIMEOUT_S", 20.0, minimum=0.1),
            chatwoot_timeout_s=env.number("CHATWOOT_TIMEOUT_S", 10.0, minimum=0.1),
            job_lease_s=env.number("JOB_LEASE_S", 30.0, minimum=3.0),
            n8n_webhook_url=env.text("N8N_AI_BROKER_WEBHOOK_URL"),
            n8n_sender=env.sender("N8N_SENDER"),
            # Forwarding happens inside Chatwoot's 5 s webhook timeout.
            n8n_timeout_s=env.number("N8N_TIMEOUT_S", 3.0, minimum=0.1, maximum=4.0),
            n8n_reply_timeout_s=env.number(
                "N8N_REPLY_TIMEOUT_S", 60.0, minimum=5.0, maximum=3600.0
            ),
            n8n_circuit_cooldown_s=env.number(
                "N8N_CIRCUIT_COOLDOWN_S", COOLDOWN_S, minimum=1.0, maximum=600.0
            ),
            enable_ai_broker=env.boolean("ENABLE_AI_BROKER", True),
            rollout_percentage=env.integer("ROLLOUT_PERCENTAGE", 0, minimum=0, maximum=100) or 0,
            rollout_shadow=env.boolean("ROLLOUT_SHADOW", False),
            host=env.text("HOST") or "127.0.0.1",
            port=env.integer("PORT", 8000, minimum=1, maximum=65535) or 8000,
            console_port=env.integer("CONSOLE_PORT", 8501, minimum=1, maximum=65535) or 8501,
            web_concurrency=env.integer("WEB_CONCURRENCY", 2, minimum=1, maximum=64) or 2,
            worker_concurrency=env.integer("WORKER_CONCURRENCY", 32, minimum=1, maximum=1000) or 32,
            queue_rate_limit=env.number("QUEUE_RATE_LIMIT", 10.0, minimum=0.1),
            response_delay_scale=env.number("RESPONSE_DELAY_SCALE", 1.0, minimum=0.0),
            admin_token=env.text("ADMIN_TOKEN"),
            form_token=env.text("FORM_TOKEN"),
            allow_open_lead_form=env.boolean("ALLOW_OPEN_LEAD_FORM", False),
            console_password=env.text("CONSOLE_PASSWORD"),
            slack_webhook_url=env.text("SLACK_WEBHOOK_URL"),
            log_level=(env.text("LOG_LEVEL") or "INFO").upper(),
            log_format=(env.text("LOG_FORMAT") or "text").lower(),
        )
        if settings.log_level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ConfigError("LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        if settings.log_format not in {"text", "json"}:
            raise ConfigError("LOG_FORMAT must be 'text' or 'json'")
        if not settings.enable_ai_broker and settings.rollout_percentage < 100:
            raise ConfigError(
                "ENABLE_AI_BROKER=false (n8n off) needs ROLLOUT_PERCENTAGE=100: below that n8n "
                "still answers part of the conversations"
            )
        if bool(settings.supabase_url) != bool(settings.supabase_service_role_key):
            raise ConfigError(
                "SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY must be set together "
                "(or both left unset for the embedded SQLite store)"
            )
        return settings

    def require_chatwoot(self) -> None:
        missing = [
            name
            for name, value in (
                ("CHATWOOT_BASE_URL", self.chatwoot_base_url),
                ("CHATWOOT_ACCOUNT_ID", self.chatwoot_account_id),
                ("CHATWOOT_API_TOKEN", self.chatwoot_api_token),
            )
            if value in (None, "")
        ]
        if missing:
            raise ConfigError(
                f"{missing[0]} is not set: the worker needs the Chatwoot installation "
                f"(missing: {', '.join(missing)}); see docs/configuration.md"
            )

    def require_webhook_auth(self) -> None:
        if not (
            self.chatwoot_webhook_secret
            or self.webhook_token
            or self.allow_unauthenticated_webhooks
        ):
            raise ConfigError(
                "CHATWOOT_WEBHOOK_SECRET is not set: set it to the webhook's or agent bot's "
                "secret (or WEBHOOK_TOKEN for Chatwoot < 4.11.2); "
                "ALLOW_UNAUTHENTICATED_WEBHOOKS=true accepts unsigned webhooks (local use only)"
            )

    def require_lead_form_auth(self) -> None:
        """A lead form open to anyone lets a stranger file a form in a customer's name."""
        if not (self.form_token or self.allow_open_lead_form):
            raise ConfigError(
                "FORM_TOKEN is not set: set it to the token the website's server sends to "
                "/api/conversations (Authorization: Bearer); ALLOW_OPEN_LEAD_FORM=true opens "
                "the form to anyone (local use only)"
            )


class _Env:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def sender(self, name: str) -> Sender | None:
        value = self.text(name)
        if value is None:
            return None
        try:
            return Sender.parse(value)
        except ValueError as exc:
            raise ConfigError(
                f"{name}: {exc}. Set it to the Chatwoot agent (user:<id>) or agent bot "
                "(agent_bot:<id>) whose token the n8n workflow posts its replies with"
            ) from None

    def text(self, name: str) -> str | None:
        value = self._environ.get(name)
        if value is None:
            return None
        value = value.strip()
        return value or None

    def http_url(self, name: str) -> str | None:
        """An http(s) URL without its trailing slash; anything else stops the start-up."""
        value = self.text(name)
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"{name} must be an http(s) URL such as https://chatwoot.example.com, not {value!r}"
            )
        return value.rstrip("/")

    def postgres_url(self, name: str) -> str | None:
        """A PostgreSQL connection string: a postgres(ql):// URL or key=value pairs."""
        value = self.text(name)
        if value is None:
            return None
        if "://" in value and urlsplit(value).scheme not in ("postgres", "postgresql"):
            raise ConfigError(
                f"{name} must be a PostgreSQL connection string such as "
                "postgresql://user:password@host:5432/postgres"
            )
        return value

    def choice(self, name: str, options: tuple[str, ...]) -> str | None:
        value = self.text(name)
        if value is None:
            return None
        if value.lower() not in options:
            raise ConfigError(f"{name} must be one of {', '.join(options)}, not {value!r}")
        return value.lower()

    def boolean(self, name: str, default: bool) -> bool:
        value = self.text(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ConfigError(f"{name} must be true or false, not {value!r}")

    def integer(
        self,
        name: str,
        default: int | None,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int | None:
        value = self.text(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(f"{name} must be a whole number, not {value!r}") from None
        _check_range(name, number, minimum, maximum)
        return number

    def number(
        self,
        name: str,
        default: float,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
    ) -> float:
        value = self.text(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{name} must be a number, not {value!r}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{name} must be a finite number")
        _check_range(name, number, minimum, maximum)
        return number


def _check_range(name: str, value: float, minimum: float | None, maximum: float | None) -> None:
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be at least {minimum:g}, not {value:g}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be at most {maximum:g}, not {value:g}")


def initial_rollout(settings: Settings) -> RolloutState:
    """The rollout a new store starts with; after that the store's state is the live one."""
    return RolloutState(
        percentage=settings.rollout_percentage,
        shadow=settings.rollout_shadow,
        n8n_enabled=settings.enable_ai_broker,
        updated_by="environment",
    )
