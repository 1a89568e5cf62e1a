"""What ends stored data early: files deleted or changed in Slack, and `/rlm forget` for a
channel (the retention purge is `bot.ops.housekeeping`).

`file_deleted` drops a file's kept text, `file_change` reads it again. `/rlm forget` is for
workspace admins and owners, as Slack's `users.info` reports them, and answers only the
person who asked.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_bolt.async_app import AsyncApp, AsyncBoltContext
from slack_sdk.errors import SlackApiError

from bot.slack import messages
from bot.slack.api import error_code

if TYPE_CHECKING:
    from bot.services import Services
    from bot.workspaces.tenants import Workspace

logger = logging.getLogger("bot.lifecycle")

ADMIN_FLAGS = ("is_admin", "is_owner", "is_primary_owner")


async def is_workspace_admin(client: Any, user_id: str) -> bool:
    """True if Slack says the user is an admin or owner of the workspace."""
    user = (await client.users_info(user=user_id))["user"]
    return any(bool(user.get(flag)) for flag in ADMIN_FLAGS)


async def forget_channel(services: Services, ws: Workspace, command: dict[str, Any]) -> None:
    """`/rlm forget`: an admin's request to delete this channel's stored runs and files,
    checked and answered with the workspace's own token (`ws`)."""
    team_id, channel_id = ws.team_id, str(command["channel_id"])
    user_id = str(command["user_id"])
    poster = ws.poster
    response_url = command.get("response_url")
    try:
        allowed = await is_workspace_admin(poster.client, user_id)
    except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
        reason = error_code(exc) if isinstance(exc, SlackApiError) else type(exc).__name__
        await poster.tell_user(
            channel_id, user_id, messages.forget_failed(reason), response_url=response_url
        )
        return
    if not allowed:
        logger.info("forget refused in %s/%s: %s is not an admin", team_id, channel_id, user_id)
        await poster.tell_user(
            channel_id, user_id, messages.FORGET_ADMINS_ONLY, response_url=response_url
        )
        return
    purged = await services.store.forget_channel(team_id, channel_id)
    running = await services.store.count_active_runs(team_id, channel_id)
    logger.info(
        "forget in %s/%s by %s: %d run(s), %d file(s) deleted",
        team_id,
        channel_id,
        user_id,
        purged.runs,
        purged.files,
    )
    await poster.tell_user(
        channel_id,
        user_id,
        messages.forget_done(purged.runs, purged.files, running),
        response_url=response_url,
    )


def register_file_events(
    app: AsyncApp,
    services: Services,
    claimed: Callable[[dict[str, Any]], Awaitable[bool]],
    team_of: Callable[[dict[str, Any], dict[str, Any], AsyncBoltContext], str],
) -> None:
    """Listeners for files deleted or changed in Slack; the work runs after the ack."""

    async def deleted(
        body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        file_id = _file_id(event)
        if not file_id or not await claimed(body):
            return
        removed = await services.store.delete_file(team_of(body, event, context), file_id)
        if removed:
            logger.info("file %s deleted in Slack: %d kept copy(ies) removed", file_id, removed)

    async def changed(
        body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        file_id = _file_id(event)
        if not file_id or not await claimed(body):
            return
        team_id = team_of(body, event, context)
        uploads = (await services.workspace(team_id, context)).uploads  # its own token
        await uploads.refresh(team_id=team_id, file_id=file_id)

    @app.event("file_deleted")
    async def on_file_deleted(
        body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        services.spawn(deleted(body, event, context), name="file_deleted")

    @app.event("file_change")
    async def on_file_change(
        body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        services.spawn(changed(body, event, context), name="file_change")


def _file_id(event: dict[str, Any]) -> str:
    file_id = event.get("file_id") or (event.get("file") or {}).get("id")
    return str(file_id) if isinstance(file_id, str) else ""
