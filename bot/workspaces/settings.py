"""Per-workspace settings: what a workspace's admins may choose, within the operator's bounds.

The operator's environment gives the defaults (RLM_ROOT_MODEL, RLM_MAX_PARALLEL_CALLS, …)
and the ceilings (RLM_MAX_PARALLEL_CALLS_CEILING and the like, RLM_ALLOWED_MODELS); an admin
sets a value with `/rlm config <name> <value>`, kept in the database (`TenantStore`), and
`WorkspaceSettingsBook.effective(team_id)` gives what that workspace's runs use.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from bot.settings import PROVIDERS, Settings
from bot.storage._tenants import TenantStore

# What each name an admin types sets, and how it reads back.
NAMES = {
    "root_model": ("root_model", "the model that reads the question and writes code"),
    "sub_model": ("sub_model", "the model the code asks about each piece"),
    "parallel_calls": ("max_parallel_calls", "sub-calls in flight at once"),
    "runs_at_once": ("max_runs", "questions answered at once; more wait their turn"),
    "daily_tokens": ("daily_tokens", "tokens per UTC day for the workspace (0: no limit)"),
    "history_messages": ("history_messages", "channel messages a question reads at most"),
    "history_days": ("history_days", "how many days back a question reads (0: no limit)"),
}
RESET_WORDS = ("default", "reset")

UNKNOWN_NAME = "There is no setting called `{name}`; the settings are: {names}."
NOT_A_NUMBER = "`{name}` takes a whole number, and `{value}` is not one."
TOO_SMALL = "`{name}` must be at least {low:,}; `{value}` is too small."
OVER_CEILING = "`{name}` can be at most {high:,} here (the operator's limit); `{value}` is over it."
NO_LIMIT_REFUSED = "`{name}` cannot be 0 (no limit) here: the operator allows at most {high:,}."
BAD_MODEL = (
    "`{value}` is not a model I can use: write provider:model with a provider among "
    "{providers}, for example openai:gpt-4o-mini."
)
MODEL_NOT_ALLOWED = "`{value}` is not among the models the operator allows here: {allowed}."


class SettingRefused(ValueError):
    """A value an admin gave that cannot be used; the message says why and what would do."""


@dataclass(frozen=True)
class WorkspaceSettings:
    """What one workspace's runs use."""

    root_model: str
    sub_model: str
    max_parallel_calls: int
    max_runs: int
    daily_tokens: int
    history_messages: int
    history_days: int
    chosen: frozenset[str] = frozenset()  # the columns its admins set (the rest: defaults)


@dataclass(frozen=True)
class Bounds:
    """The operator's ceilings (0 for daily tokens and history days: none)."""

    max_parallel_calls: int
    max_runs: int
    daily_tokens: int
    history_messages: int
    history_days: int
    models: tuple[str, ...]


def defaults_from(settings: Settings) -> WorkspaceSettings:
    return WorkspaceSettings(
        root_model=settings.rlm_root_model,
        sub_model=settings.rlm_sub_model,
        max_parallel_calls=settings.rlm_max_parallel_calls,
        max_runs=settings.rlm_max_runs_per_workspace,
        daily_tokens=settings.rlm_daily_tokens,
        history_messages=settings.rlm_history_messages,
        history_days=settings.rlm_history_days,
    )


def bounds_from(settings: Settings) -> Bounds:
    listed = [normalise_model(m) for m in settings.rlm_allowed_models.split(",") if m.strip()]
    models = tuple(dict.fromkeys([settings.rlm_root_model, settings.rlm_sub_model, *listed]))
    return Bounds(
        max_parallel_calls=settings.rlm_max_parallel_calls_ceiling,
        max_runs=settings.rlm_max_runs_per_workspace_ceiling,
        daily_tokens=settings.rlm_daily_tokens_ceiling,
        history_messages=settings.rlm_history_messages_ceiling,
        history_days=settings.rlm_history_days_ceiling,
        models=models,
    )


def normalise_model(value: str) -> str:
    provider, sep, model = value.strip().partition(":")
    if not sep or provider.lower() not in PROVIDERS or not model.strip() or len(value) > 200:
        raise SettingRefused(BAD_MODEL.format(value=value.strip(), providers=", ".join(PROVIDERS)))
    return f"{provider.lower()}:{model.strip()}"


def parse_value(name: str, text: str, bounds: Bounds) -> tuple[str, Any]:
    """The (column, value) an admin's `name value` sets; SettingRefused if it cannot be.
    A value of `default` gives (column, None): back to the operator's default."""
    key = name.strip().lower().replace("-", "_")
    if key not in NAMES:
        raise SettingRefused(UNKNOWN_NAME.format(name=name, names=", ".join(NAMES)))
    column = NAMES[key][0]
    text = text.strip()
    if text.lower() in RESET_WORDS:
        return column, None
    if column in ("root_model", "sub_model"):
        model = normalise_model(text)
        if model not in bounds.models:
            raise SettingRefused(
                MODEL_NOT_ALLOWED.format(value=model, allowed=", ".join(bounds.models))
            )
        return column, model
    try:
        number = int(text.replace(",", "").replace("_", ""))
    except ValueError:
        raise SettingRefused(NOT_A_NUMBER.format(name=key, value=text[:40])) from None
    high: int = getattr(bounds, column)
    zero_means_none = column in ("daily_tokens", "history_days")
    if number == 0 and zero_means_none:
        if high:
            raise SettingRefused(NO_LIMIT_REFUSED.format(name=key, high=high))
        return column, 0
    if number < 1:
        raise SettingRefused(TOO_SMALL.format(name=key, low=1, value=number))
    if high and number > high:
        raise SettingRefused(OVER_CEILING.format(name=key, high=high, value=number))
    return column, number


def describe(current: WorkspaceSettings) -> str:
    """The workspace's settings as the `/rlm config` reply shows them."""
    lines = ["*This workspace's settings*"]
    for key, (column, meaning) in NAMES.items():
        value = getattr(current, column)
        shown = f"{value:,}" if isinstance(value, int) else str(value)
        origin = "" if column in current.chosen else " _(default)_"
        lines.append(f"• `{key}` = `{shown}`{origin} — {meaning}")
    lines.append(
        "Admins change one with `/rlm config <name> <value>`, or `/rlm config <name> default`."
    )
    return "\n".join(lines)


class WorkspaceSettingsBook:
    """Effective settings per workspace: the defaults, overlaid with what its admins chose."""

    def __init__(self, *, tenants: TenantStore, defaults: WorkspaceSettings, bounds: Bounds):
        self.tenants = tenants
        self.defaults = defaults
        self.bounds = bounds

    async def effective(self, team_id: str) -> WorkspaceSettings:
        chosen = await self.tenants.settings(team_id)
        if not chosen:
            return self.defaults
        # A value chosen under an older, looser ceiling is held to the ceiling of today.
        for column in ("max_parallel_calls", "max_runs", "history_messages"):
            if column in chosen:
                chosen[column] = min(chosen[column], getattr(self.bounds, column))
        for column in ("daily_tokens", "history_days"):
            high = getattr(self.bounds, column)
            if column in chosen and high and not 0 < chosen[column] <= high:
                chosen[column] = high
        for column in ("root_model", "sub_model"):
            if column in chosen and chosen[column] not in self.bounds.models:
                del chosen[column]
        return replace(self.defaults, **chosen, chosen=frozenset(chosen))

    async def change(self, team_id: str, name: str, value: str, *, user_id: str) -> str:
        """Apply an admin's `name value`; returns the column set. SettingRefused if invalid."""
        column, parsed = parse_value(name, value, self.bounds)
        await self.tenants.set_setting(team_id, column, parsed, user_id=user_id)
        return column
