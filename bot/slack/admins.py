"""Telling a workspace admin, and only an admin, what members are not told: which setting a
limit is and where it is changed. Whether someone is an admin is asked of Slack (users.info)
with the workspace's own token, and only when there is something to tell."""

from __future__ import annotations

import logging

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.api import SlackPoster, error_code

logger = logging.getLogger("bot.admins")


async def is_workspace_admin(client: AsyncWebClient, user_id: str) -> bool:
    """True for an admin, owner or primary owner; False when Slack cannot say (logged)."""
    try:
        user = (await client.users_info(user=user_id))["user"]
    except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
        why = error_code(exc) if isinstance(exc, SlackApiError) else type(exc).__name__
        logger.warning("users.info for %s failed: %s", user_id, why)
        return False
    return bool(user.get("is_admin") or user.get("is_owner") or user.get("is_primary_owner"))


async def tell_if_admin(
    poster: SlackPoster,
    channel: str,
    user_id: str | None,
    note: str,
    *,
    response_url: str | None = None,
) -> bool:
    """An ephemeral `note` to `user_id` if they are a workspace admin; False otherwise."""
    if not (note and user_id) or not await is_workspace_admin(poster.client, user_id):
        return False
    return await poster.tell_user(channel, user_id, note, response_url=response_url)
