"""`/rlm config`: a workspace's settings, shown to anyone and changed only by its admins.

`/rlm config` shows them; `/rlm config <name> <value>` sets one, `/rlm config <name> default`
gives it back to the operator's default. Whether the asker is an admin (admin, owner or
primary owner) is asked of Slack with users.info, using the asking workspace's own token.
"""

from __future__ import annotations

import logging

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.workspaces.config_form import config_view
from bot.workspaces.settings import (
    NAMES,
    UNKNOWN_NAME,
    SettingRefused,
    WorkspaceSettingsBook,
    describe,
)

logger = logging.getLogger("bot.config")

NOT_ADMIN = (
    "Only a workspace admin or owner can change these settings; ask one of them to run "
    "`/rlm config {name} {value}`."
)
CANNOT_CHECK_ADMIN = (
    "I could not check with Slack that you are an admin ({error}); nothing was changed. "
    "Try again in a moment."
)
NEEDS_VALUE = "Give a value too, for example `/rlm config {name} {example}`."
CHANGED = "Done: `{name}` is now `{value}` for this workspace. Runs that start from now use it."
RESET = "Done: `{name}` is back to the default for this workspace."
FORM_FAILED = "I could not open the settings form ({error}); use `/rlm config <name> <value>`."
_EXAMPLES = {"root_model": "openai:gpt-4o", "sub_model": "openai:gpt-4o-mini"}


async def is_admin(client: AsyncWebClient, user_id: str) -> bool:
    """True for an admin, owner or primary owner of the workspace `client` belongs to;
    SlackApiError if Slack cannot say."""
    user = (await client.users_info(user=user_id))["user"]
    return bool(user.get("is_admin") or user.get("is_owner") or user.get("is_primary_owner"))


async def config_reply(
    *,
    book: WorkspaceSettingsBook,
    client: AsyncWebClient,
    team_id: str,
    user_id: str,
    text: str,
    trigger_id: str | None = None,
    channel_id: str = "",
) -> str:
    """What `/rlm config <text>` answers, having changed the setting if it may; `edit` opens
    the settings form for an admin (and answers nothing when it opened)."""
    words = text.split(None, 1)
    if not words:
        return describe(await book.effective(team_id))
    if words[0].lower() == "edit" and len(words) == 1:
        return await _open_form(book, client, team_id, user_id, trigger_id, channel_id)
    name = words[0].lower().replace("-", "_")
    value = words[1].strip() if len(words) > 1 else ""
    if name not in NAMES:
        return UNKNOWN_NAME.format(name=words[0][:40], names=", ".join(NAMES))
    if not value:
        return NEEDS_VALUE.format(name=name, example=_EXAMPLES.get(name, "4"))
    try:
        admin = await is_admin(client, user_id)
    except SlackApiError as exc:
        return CANNOT_CHECK_ADMIN.format(error=exc.response.get("error") or "unknown error")
    if not admin:
        logger.info("a non-admin tried to change %s in %s; refused", name, team_id)
        return NOT_ADMIN.format(name=name, value=value[:60])
    try:
        column = await book.change(team_id, name, value, user_id=user_id)
    except SettingRefused as exc:
        return str(exc)
    current = await book.effective(team_id)
    logger.info("%s in %s set by an admin", name, team_id)
    if column not in current.chosen:
        return RESET.format(name=name)
    return CHANGED.format(name=name, value=getattr(current, column))


async def _open_form(
    book: WorkspaceSettingsBook,
    client: AsyncWebClient,
    team_id: str,
    user_id: str,
    trigger_id: str | None,
    channel_id: str,
) -> str:
    try:
        if not await is_admin(client, user_id):
            return NOT_ADMIN.format(name="<name>", value="<value>")
        current = await book.effective(team_id)
        await client.views_open(
            trigger_id=trigger_id or "", view=config_view(current, book.defaults, channel_id)
        )
    except SlackApiError as exc:
        return FORM_FAILED.format(error=exc.response.get("error") or "unknown error")
    return ""
