"""The strings only workspace admins and the operator see: `/rlm usage`, the provider limits,
the fixes App Home lists, and the note that tells an admin which setting a refusal hit.

Members see the words of bot.slack.messages; the numbers and setting names live here.
"""

from __future__ import annotations

from collections.abc import Sequence

from rlm import ProviderLimit

# The limits a workspace admin sets with `/rlm config <name> <value>` (bot.workspaces.settings).
_WORKSPACE_SETTINGS = {"daily_tokens": "daily_tokens"}
# The limits only the app's operator sets, with the environment variable that sets each.
_OPERATOR_SETTINGS = {
    "max_iterations": "RLM_MAX_ITERATIONS",
    "max_subcalls": "RLM_MAX_SUBCALLS",
    "max_tokens": "RLM_MAX_RUN_TOKENS",
    "max_seconds": "RLM_MAX_RUN_SECONDS",
}
_UNITS = {
    "max_iterations": "steps",
    "max_subcalls": "sub-calls",
    "max_tokens": "tokens",
    "max_seconds": "seconds",
    "daily_tokens": "tokens a day",
}


def _number(value: float) -> str:
    """2000000 → "2,000,000"; 0.5 → "0.5"."""
    return f"{int(value):,}" if float(value).is_integer() else f"{value:,.1f}"


def limit_note(limit: str, amount: float | None, *, chosen: bool = False) -> str:
    """What an admin is told, by themselves, when `limit` refused or stopped their question:
    the amount and where it is set (`/rlm config` for a workspace setting; `chosen` when an
    admin of this workspace set it there)."""
    unit = _UNITS.get(limit, limit.replace("_", " "))
    what = f"{_number(amount)} {unit}" if amount else unit
    setting = _WORKSPACE_SETTINGS.get(limit)
    if setting is not None:
        who = "an admin set it" if chosen else "it is the default"
        return (
            f"_For admins:_ the limit is {what} ({who}); change it with "
            f"`/rlm config {setting} <number>`, within the operator's ceiling."
        )
    variable = _OPERATOR_SETTINGS.get(limit)
    where = f" (`{variable}`)" if variable else ""
    return (
        f"_For admins:_ the limit is {what} per question, set by the app's operator{where}; "
        "it is not a workspace setting."
    )


def _limit(value: float, unit: str) -> str:
    return f"{_number(value)} {unit}" if value else f"no limit on {unit}"


def usage_report(
    *,
    tokens_today: int,
    daily_tokens: int,
    runs_today: int,
    in_flight: int,
    max_iterations: int,
    max_subcalls: int,
    max_run_tokens: int,
    max_run_seconds: float,
) -> str:
    if daily_tokens:
        share = 100 * tokens_today / daily_tokens
        tokens = f"{tokens_today:,} of {daily_tokens:,} a day ({share:.0f}%)"
    else:
        tokens = f"{tokens_today:,} (no daily limit)"
    runs = "run" if runs_today == 1 else "runs"
    per_run = ", ".join(
        (
            _limit(max_iterations, "steps"),
            _limit(max_subcalls, "sub-calls"),
            _limit(max_run_tokens, "tokens"),
            _limit(max_run_seconds, "seconds"),
        )
    )
    return (
        "*This workspace today* (since 00:00 UTC)\n"
        f"• Tokens used: {tokens}\n"
        f"• {runs_today:,} {runs} today, {in_flight:,} in flight now\n"
        f"• Each run may use at most: {per_run}"
    )


def provider_limits_report(limits: Sequence[ProviderLimit]) -> str:
    """The adaptive sub-call limit of each provider key in use, shared by all workspaces."""
    if not limits:
        return ""
    lines = []
    for limit in limits:
        held = f", holding {limit.held_for:.1f} s for the provider" if limit.held_for > 0 else ""
        lines.append(
            f"• {limit.name}: {limit.width:,} sub-calls at once now (ceiling "
            f"{limit.ceiling:,}), {limit.in_flight:,} in flight, {limit.throttled:,} "
            f"rate-limit answers so far{held}"
        )
    return "\n*Provider limits* (shared by every workspace on the key)\n" + "\n".join(lines)


# For the log and App Home: what only an operator can fix, and how.
OPERATOR_FIXES = {
    "operator:provider_auth": (
        "the model provider refused the API key: set a valid key (OPENAI_API_KEY, "
        "ANTHROPIC_API_KEY or GEMINI_API_KEY) and restart the app"
    ),
    "operator:unknown_model": (
        "the model provider does not know the model: check RLM_ROOT_MODEL and RLM_SUB_MODEL"
    ),
    "operator:missing_scope": (
        "the Slack app lacks a permission: add the scope named in the log to manifest.yml's "
        "bot scopes and reinstall the app"
    ),
}


def _dollars(value: float) -> str:
    return f"${value:,.4f}" if value < 1 else f"${value:,.2f}"


def spend_report(*, cost_today: float, daily_cost: float, max_run_cost: float) -> str:
    """The money lines of `/rlm usage` and App Home, for admins only."""
    if daily_cost:
        share = 100 * cost_today / daily_cost
        spent = f"{_dollars(cost_today)} of {_dollars(daily_cost)} a day ({share:.0f}%)"
    else:
        spent = f"{_dollars(cost_today)} (no daily limit)"
    per_run = _dollars(max_run_cost) if max_run_cost else "no limit"
    return (
        f"\n• Spent today (admins only; at list prices, runs over unpriced models not "
        f"counted): {spent}\n• Each run may spend at most: {per_run}"
    )
