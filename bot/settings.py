"""The app's settings, read once from the environment and `.env` at start and passed in.

Field names are the environment variables in lower case (DESIGN's table, plus `RLM_*` extras).
`Settings.from_env()` turns any validation error into `SettingsError`, one line naming the
variable, which `rlm-bot` prints before it exits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from rlm._pricing import Price

SLACK_DEFAULT_API_URL = "https://slack.com/api/"
SLACK_DEFAULT_AUTHORIZE_URL = "https://slack.com/oauth/v2/authorize"
# The bot scopes manifest.yml asks for; an OAuth install asks for the same.
# The bot scopes an OAuth install asks for: manifest.yml's (a test holds them equal).
DEFAULT_BOT_SCOPES = (
    "app_mentions:read,assistant:write,channels:history,channels:read,chat:write,commands,"
    "files:read,files:write,groups:history,groups:read,im:history,reactions:write,users:read"
)
OAUTH_VARIABLES = ("SLACK_CLIENT_ID", "SLACK_CLIENT_SECRET", "SLACK_STATE_SECRET")
PROVIDERS = ("openai", "anthropic", "gemini")
_NO_PRICE = (
    "a money limit (RLM_MAX_RUN_COST_USD, RLM_DAILY_COST_USD) needs a price for every model, "
    'and {spec} has none: add it to RLM_PRICES_FILE or RLM_PRICES as {{"{spec}": {{"input": '
    '..., "cached_input": ..., "output": ...}}}} in dollars per million tokens'
)
_EMPTY = "is empty"
_NO_BOT_TOKEN = (
    "SLACK_BOT_TOKEN is not set: set it to the app's bot token (xoxb-…) in the "
    "environment or .env, with SLACK_SIGNING_SECRET for HTTP mode or "
    "SLACK_APP_TOKEN (xapp-…) for Socket Mode (or set SLACK_CLIENT_ID, SLACK_CLIENT_SECRET "
    "and SLACK_STATE_SECRET for OAuth installs)."
)


class SettingsError(Exception):
    """A setting is missing or malformed; the message is one line naming the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    _prices: dict[str, Price] = PrivateAttr(default_factory=dict)  # read at start

    slack_bot_token: str | None = None  # unset only when OAuth installs are on
    slack_signing_secret: str | None = None
    slack_app_token: str | None = None
    slack_api_url: str = SLACK_DEFAULT_API_URL
    port: int = Field(default=3000, ge=0, le=65535)
    database_url: str = "sqlite+aiosqlite:///rlm.db"
    rlm_root_model: str = "openai:gpt-4o"
    rlm_sub_model: str = "openai:gpt-4o-mini"
    rlm_max_parallel_calls: int = Field(default=10, ge=1, le=1000)
    # Ceiling of the adaptive limit per provider key, shared by every workspace on that key.
    rlm_provider_max_concurrency: int = Field(default=256, ge=1, le=10_000)

    openai_api_key: str | None = None
    openai_base_url: str | None = None
    anthropic_api_key: str | None = None
    anthropic_base_url: str | None = None
    gemini_api_key: str | None = None
    gemini_base_url: str | None = None

    # Extras: bounds on what a run reads and does.
    rlm_history_messages: int = Field(default=2000, ge=1, le=100_000)
    rlm_history_days: int = Field(default=90, ge=0, le=3650)  # 0: no age limit
    rlm_max_file_bytes: int = Field(default=20_000_000, ge=1)
    # Files one question reads (kept, or fetched on demand from the messages it reads).
    rlm_max_files_per_question: int = Field(default=50, ge=0, le=1000)
    rlm_max_file_bytes_per_question: int = Field(default=50_000_000, ge=0)
    rlm_max_runs_per_workspace: int = Field(default=2, ge=1, le=100)
    rlm_max_iterations: int = Field(default=20, ge=1, le=200)
    rlm_prompt_mode: Literal["standard", "conservative", "no_subcalls"] = "standard"
    rlm_progress_interval: float = Field(default=1.0, ge=0.0, le=60.0)
    # A run's status message: least seconds between its edits, per workspace (chat.update is
    # Tier 3, about 50 a minute), and the silence after which it says it waits for the model.
    rlm_status_edit_interval: float = Field(default=1.2, ge=0.0, le=60.0)
    rlm_status_wait_notice: float = Field(default=10.0, ge=0.0, le=600.0)
    rlm_http_host: str = "0.0.0.0"  # the interface HTTP mode listens on
    rlm_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    rlm_log_format: Literal["text", "json"] = "text"

    # Budgets: per run (0: no limit) and per workspace per UTC day (0: no limit).
    rlm_max_subcalls: int = Field(default=2000, ge=0)
    rlm_max_run_tokens: int = Field(default=2_000_000, ge=0)
    rlm_max_run_seconds: float = Field(default=600.0, ge=0)
    rlm_daily_tokens: int = Field(default=0, ge=0)
    # Money, in US dollars at the price table: per run and per workspace per UTC day (0: no
    # limit). The table is the engine's, with RLM_PRICES_FILE (JSON or TOML) and RLM_PRICES
    # (inline JSON, over the file) laid over it: {"provider:model": {"input": 2.5,
    # "cached_input": 1.25, "output": 10}} in dollars per million tokens.
    rlm_max_run_cost_usd: float = Field(default=0.0, ge=0)
    rlm_daily_cost_usd: float = Field(default=0.0, ge=0)
    rlm_prices_file: str | None = None
    rlm_prices: str | None = None
    # Per request from the REPL, refused before any sub-call: chunks in one parallel_query,
    # and UTF-8 bytes of the prompts of one parallel_query (summed) or of one llm_query.
    rlm_max_map_chunks: int = Field(default=10_000, ge=1)
    rlm_max_prompt_bytes: int = Field(default=64 * 1024 * 1024, ge=1)

    # Requests, providers and the REPL sandbox.
    rlm_max_request_bytes: int = Field(default=1_048_576, ge=1024)
    rlm_provider_timeout: float = Field(default=120.0, gt=0)
    rlm_provider_retries: int = Field(default=4, ge=0, le=20)
    rlm_sandbox: Literal["auto", "bwrap", "unshare", "none"] = "auto"
    rlm_require_sandbox: bool = False
    # Installed distributions (comma-separated) whose files generated code may also import.
    rlm_sandbox_packages: str = ""

    # Many workspaces (bot/installs.py, bot/workspace_settings.py): OAuth installs, stored-token
    # encryption, uninstall purges and the ceilings on what a workspace admin may set.
    slack_client_id: str | None = None
    slack_client_secret: str | None = None
    slack_state_secret: str | None = None
    slack_redirect_uri: str | None = None  # needed when the app lists several redirect URLs
    slack_authorize_url: str = SLACK_DEFAULT_AUTHORIZE_URL
    slack_scopes: str = DEFAULT_BOT_SCOPES
    slack_token_rotation_minutes: int = Field(default=120, ge=1, le=720)
    # Socket Mode's small HTTP listener: health, readiness, metrics, install pages.
    rlm_install_port: int | None = Field(default=None, ge=0, le=65535)
    rlm_encryption_key: str | None = None
    # Data lifecycle: runs, their outputs and file text older than this are purged; also how
    # long an uninstalled workspace's data is kept (unless RLM_PURGE_ON_UNINSTALL).
    rlm_retention_days: int = Field(default=90, ge=1, le=36_500)
    rlm_purge_on_uninstall: bool = False
    rlm_allowed_models: str = ""  # comma-separated; empty: the root and sub model only
    rlm_max_parallel_calls_ceiling: int = Field(default=100, ge=1, le=1000)
    rlm_max_runs_per_workspace_ceiling: int = Field(default=10, ge=1, le=100)
    rlm_daily_tokens_ceiling: int = Field(default=0, ge=0)  # 0: no ceiling
    rlm_history_messages_ceiling: int = Field(default=20_000, ge=1, le=100_000)
    rlm_history_days_ceiling: int = Field(default=3650, ge=0, le=3650)  # 0: no ceiling
    # Replicas: caps and run ownership shared through Redis (unset: one process, in memory).
    redis_url: str | None = None
    rlm_redis_prefix: str = Field(default="rlm", min_length=1, max_length=64)
    rlm_lease_seconds: float = Field(default=10.0, ge=1.0, le=300.0)  # a dead replica's hold
    # How long a run's writes wait out an unreachable database before its end is kept in
    # memory, to be written when the database answers again.
    rlm_db_retry_seconds: float = Field(default=60.0, ge=0.0, le=3600.0)
    rlm_shutdown_grace_seconds: float = Field(default=30.0, ge=0.0, le=3600.0)

    @field_validator(
        "slack_signing_secret",
        "slack_app_token",
        "openai_api_key",
        "openai_base_url",
        "anthropic_api_key",
        "anthropic_base_url",
        "gemini_api_key",
        "gemini_base_url",
        "slack_client_id",
        "slack_client_secret",
        "slack_state_secret",
        "slack_redirect_uri",
        "rlm_encryption_key",
        "redis_url",
        "rlm_prices_file",
        "rlm_prices",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # `FOO=` in a .env file means "not set", not "set to the empty string".
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip() if isinstance(value, str) else value

    @field_validator("slack_bot_token")
    @classmethod
    def _bot_token(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not value:
            raise ValueError(_EMPTY)
        if not value.startswith("xoxb-"):
            raise ValueError("must be a bot token starting with xoxb-")
        return value

    @field_validator("slack_app_token")
    @classmethod
    def _app_token(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("xapp-"):
            raise ValueError("must be an app-level token starting with xapp- (or unset for HTTP)")
        return value

    @field_validator("slack_api_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        value = value.strip()
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL such as https://slack.com/api/")
        return value if value.endswith("/") else value + "/"

    @field_validator("rlm_root_model", "rlm_sub_model")
    @classmethod
    def _model_spec(cls, value: str) -> str:
        provider, sep, model = value.strip().partition(":")
        if not sep or provider.lower() not in PROVIDERS or not model.strip():
            raise ValueError(
                f"must be provider:model with a provider among {', '.join(PROVIDERS)} "
                "(for example openai:gpt-4o-mini)"
            )
        return f"{provider.lower()}:{model.strip()}"

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        return _check_database_url(value)

    @field_validator("slack_authorize_url")
    @classmethod
    def _authorize_url(cls, value: str) -> str:
        value = value.strip()
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL such as " + SLACK_DEFAULT_AUTHORIZE_URL)
        return value

    @model_validator(mode="after")
    def _oauth_choice(self) -> Settings:
        given = [self.slack_client_id, self.slack_client_secret, self.slack_state_secret]
        if any(given) and not all(given):
            missing = [n for n, v in zip(OAUTH_VARIABLES, given, strict=True) if not v]
            raise ValueError(
                f"OAuth installs need {', '.join(OAUTH_VARIABLES)} together; "
                f"{', '.join(missing)} not set"
            )
        if self.oauth_enabled:
            from bot.storage._crypto import check_keys  # cryptography is imported only when needed

            check_keys(self.rlm_encryption_key)
        return self

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a Redis URL such as redis://localhost:6379/0")
        return value

    @field_validator("rlm_sandbox_packages")
    @classmethod
    def _sandbox_packages(cls, value: str) -> str:
        from rlm import ConfigurationError
        from rlm.repl._view import check_packages

        try:
            check_packages(n.strip() for n in value.split(",") if n.strip())
        except ConfigurationError as exc:
            raise ValueError(str(exc)) from None
        return value

    @property
    def sandbox_packages(self) -> tuple[str, ...]:
        """RLM_SANDBOX_PACKAGES as distribution names."""
        return tuple(n.strip() for n in self.rlm_sandbox_packages.split(",") if n.strip())

    @model_validator(mode="after")
    def _price_table(self) -> Settings:
        # Read here, once at start: a bad file or an unpriced model under a money limit
        # stops the app with one line, not each run later.
        from rlm import ConfigurationError, load_prices, load_prices_file, price_for
        from rlm._pricing import with_overrides

        try:
            table = load_prices_file(self.rlm_prices_file) if self.rlm_prices_file else {}
            table |= load_prices(self.rlm_prices) if self.rlm_prices else {}
        except ConfigurationError as exc:
            raise ValueError(str(exc)) from None
        self._prices = with_overrides(table)
        if self.rlm_max_run_cost_usd or self.rlm_daily_cost_usd:
            listed = [m.strip() for m in self.rlm_allowed_models.split(",") if m.strip()]
            for spec in (self.rlm_root_model, self.rlm_sub_model, *listed):
                if price_for(spec, self._prices) is None:
                    raise ValueError(_NO_PRICE.format(spec=spec))
        return self

    @property
    def prices(self) -> dict[str, Price]:
        """The price table runs are costed at: the engine's, with the operator's over it."""
        return self._prices

    @model_validator(mode="after")
    def _sandbox_choice(self) -> Settings:
        if self.rlm_sandbox == "none" and self.rlm_require_sandbox:
            raise ValueError("RLM_SANDBOX=none contradicts RLM_REQUIRE_SANDBOX=true; choose one")
        return self

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every configured credential, for keeping them out of logs: tokens, the signing
        secret, provider keys, and passwords inside the database and provider URLs."""
        values = [
            self.slack_bot_token,
            self.slack_signing_secret,
            self.slack_app_token,
            self.openai_api_key,
            self.anthropic_api_key,
            self.gemini_api_key,
            self.slack_client_secret,
            self.slack_state_secret,
            *(key.strip() for key in (self.rlm_encryption_key or "").split(",")),
        ]
        for url in (
            self.database_url,
            self.openai_base_url,
            self.anthropic_base_url,
            self.gemini_base_url,
            self.redis_url,
        ):
            try:
                values.append(urlsplit(url).password if url else None)
            except ValueError:  # a malformed URL holds no password we can find
                continue
        return tuple(v for v in values if v)

    @property
    def oauth_enabled(self) -> bool:
        """True when the app installs into many workspaces through Slack's OAuth flow."""
        return bool(self.slack_client_id and self.slack_client_secret and self.slack_state_secret)

    @property
    def socket_mode(self) -> bool:
        return self.slack_app_token is not None

    def provider_endpoint(self, spec: str) -> tuple[str | None, str | None]:
        """The (api_key, base_url) configured for the provider of a `provider:model` spec."""
        provider = spec.partition(":")[0]
        return (
            getattr(self, f"{provider}_api_key", None),
            getattr(self, f"{provider}_base_url", None),
        )

    @classmethod
    def from_env(cls, env_file: str | Path | None = ".env", **overrides: Any) -> Settings:
        """Settings from the environment and `env_file`; SettingsError (one line) if invalid."""
        try:
            settings = cls(_env_file=env_file, **overrides)  # type: ignore[call-arg]
        except ValidationError as exc:
            raise SettingsError(_describe(exc)) from None
        if settings.slack_bot_token is None and not settings.oauth_enabled:
            raise SettingsError(_NO_BOT_TOKEN)
        if not settings.socket_mode and settings.slack_signing_secret is None:
            raise SettingsError(
                "SLACK_SIGNING_SECRET is not set: HTTP mode needs it to verify requests "
                "(Basic Information > Signing Secret), or set SLACK_APP_TOKEN for Socket Mode."
            )
        return settings


def _check_database_url(value: str) -> str:
    if "://" not in value:
        raise ValueError("must be a SQLAlchemy async URL such as sqlite+aiosqlite:///rlm.db")
    return value.strip()


class DatabaseSettings(BaseSettings):
    """Only DATABASE_URL, for `rlm-bot migrate`: migrating needs no Slack or model settings."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    database_url: str = "sqlite+aiosqlite:///rlm.db"

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        return _check_database_url(value)

    @classmethod
    def from_env(cls, env_file: str | Path | None = ".env") -> DatabaseSettings:
        try:
            return cls(_env_file=env_file)  # type: ignore[call-arg]
        except ValidationError as exc:
            raise SettingsError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    """One line for the first error, naming the environment variable."""
    error = exc.errors()[0]
    message = str(error["msg"]).removeprefix("Value error, ")
    if not error["loc"]:  # a rule over several variables names them itself
        return f"{message}."
    name = str(error["loc"][0]).upper()
    if error["type"] == "missing" or message == _EMPTY:
        if name == "SLACK_BOT_TOKEN":
            return _NO_BOT_TOKEN
        return f"{name} is not set: set it in the environment or .env."
    shown = error.get("input")
    if name.endswith(("_TOKEN", "_SECRET", "_KEY")):
        return f"{name} {message}."
    return f"{name}={shown!s} is not valid: {message}."
