"""Configuration problems only an operator can fix, recorded for admins to see on App Home.

A refused provider key, a model the provider does not know, a Slack scope the app lacks:
users are told what happened, but the fix belongs to whoever runs the app, so each is logged
with its fix and kept (`Store.record_problem`) until `Store.problems_for_workspace` shows it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from slack_sdk.errors import SlackApiError

from bot.storage import Store
from rlm import AuthenticationError, BadResponseError, ProviderError

logger = logging.getLogger("bot.problems")

KIND_LENGTH = 64

_AUTH = "The {provider} provider refused the API key (model {model}, HTTP {status})."
_AUTH_FIX = "Set a valid `{env}_API_KEY` (and check `{env}_BASE_URL`), then restart the app."
_MODEL = "The {provider} provider does not serve the model `{model}` (HTTP 404)."
_MODEL_FIX = "Set `RLM_ROOT_MODEL` / `RLM_SUB_MODEL` to a model the provider serves."
_SCOPE = "Slack refused a call because the app lacks the `{scope}` permission."
_SCOPE_FIX = "Add `{scope}` to the app's scopes (it is in manifest.yml) and reinstall the app."


@dataclass(frozen=True)
class Problem:
    kind: str
    detail: str
    fix: str


def operator_problem(exc: BaseException) -> Problem | None:
    """The operator-fixable problem behind `exc`, or None if a user can retry past it."""
    if isinstance(exc, AuthenticationError):
        return Problem(
            kind=_kind("provider_auth", exc.provider),
            detail=_AUTH.format(
                provider=exc.provider or "model", model=exc.model, status=exc.status or "?"
            ),
            fix=_AUTH_FIX.format(env=(exc.provider or "provider").upper()),
        )
    if isinstance(exc, BadResponseError) and exc.status == 404:
        return Problem(
            kind=_kind("unknown_model", exc.provider, exc.model),
            detail=_MODEL.format(provider=exc.provider or "model", model=exc.model),
            fix=_MODEL_FIX,
        )
    if isinstance(exc, SlackApiError) and exc.response.get("error") == "missing_scope":
        scope = str(exc.response.get("needed") or "unknown")
        return Problem(
            kind=_kind("slack_scope", scope),
            detail=_SCOPE.format(scope=scope),
            fix=_SCOPE_FIX.format(scope=scope),
        )
    return None


async def record_operator_problem(store: Store, team_id: str, exc: BaseException) -> None:
    """Log and keep `exc` for admins when only an operator can fix it; never raises."""
    if not isinstance(exc, ProviderError | SlackApiError):
        return
    problem = operator_problem(exc)
    if problem is None:
        return
    logger.error("configuration problem in %s: %s Fix: %s", team_id, problem.detail, problem.fix)
    try:
        await store.record_problem(
            team_id, kind=problem.kind, detail=problem.detail, fix=problem.fix
        )
    except Exception:
        logger.exception("could not record a configuration problem")


def _kind(*parts: str) -> str:
    return ":".join(p for p in parts if p)[:KIND_LENGTH]
