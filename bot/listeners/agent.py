"""Slack's Agent messaging experience (`agent_view`): conversations in the app's Messages tab.

Under `agent_view` Slack sends no `assistant_thread_started`: a member opening the app's
Messages tab is `app_home_opened` with `tab == "messages"`, and what they have open beside
the conversation arrives as `app_context_changed` (entities, the most relevant first). The
channel in view is kept per DM (each member has one with the app), as an assistant pane
thread's is kept per thread, and a question in that DM is about it, after the pane's checks.
Suggested prompts are set for the DM without `thread_ts`: with it, Slack drops the call
silently for agent apps. A workspace whose app is still on `assistant_view` never sends
`app_context_changed`, so its DMs and pane threads go on as before.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_bolt.async_app import AsyncApp, AsyncBoltContext
from slack_sdk.errors import SlackApiError

from bot.slack import surface_messages as text
from bot.slack.api import event_team
from bot.storage import PaneContext, Store

if TYPE_CHECKING:
    from bot.services import Services

logger = logging.getLogger("bot.agent_view")

# The DM's view is kept beside the pane threads' (same table), under this in place of a ts.
AGENT_VIEW_KEY = "agent_view"
CHANNEL_ENTITY = "slack#/types/channel_id"
MESSAGE_ENTITY = "slack#/types/message_context"  # a message: its channel is the one in view
_SLACK_FAILURES = (SlackApiError, aiohttp.ClientError, TimeoutError)


def channel_in_view(context: Mapping[str, Any] | None) -> tuple[str | None, str | None]:
    """The channel (and its workspace) an `app_context_changed` context names first; a
    canvas or list alone names none."""
    for entity in (context or {}).get("entities") or []:
        if not isinstance(entity, dict):
            continue
        kind, value, team = entity.get("type"), entity.get("value"), entity.get("team_id")
        if kind == CHANNEL_ENTITY and isinstance(value, str) and value:
            return value, team
        if kind == MESSAGE_ENTITY and isinstance(value, dict) and value.get("channel_id"):
            return str(value["channel_id"]), team
    return None, None


async def agent_view(store: Store, channel: str, user: str | None) -> PaneContext | None:
    """What the member in DM `channel` has open, if their app is on `agent_view` (None: no
    `app_context_changed` was ever received for them, as on `assistant_view`)."""
    found = await store.pane_context(channel, AGENT_VIEW_KEY)
    if found is None and user:
        found = await store.pane_context(user, AGENT_VIEW_KEY)
    return found


def register_agent_view(app: AsyncApp, services: Services) -> None:
    """`app_context_changed`: remember the channel in view. (`app_home_opened` is shared
    with App Home: `bot.listeners.surfaces` hands the Messages tab to `open_messages`.)"""
    store = services.store

    async def remember(
        body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        if not await services.claimed(body):
            return
        user = event.get("user") or context.user_id
        # Keyed by the DM when Slack names it, else by the member (one DM each).
        key = event.get("channel") or user
        if not key:
            logger.info("app_context_changed without a channel or user: ignored")
            return
        viewed, viewed_team = channel_in_view(event.get("context"))
        await store.save_pane_context(
            channel_id=str(key),
            thread_ts=AGENT_VIEW_KEY,
            team_id=event_team(body, event, context),
            user_id=user,
            viewed_channel_id=viewed,
            viewed_team_id=viewed_team,
        )

    @app.event("app_context_changed")
    async def on_context_changed(
        body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        services.spawn(remember(body, event, context), name="agent_context")


async def open_messages(
    services: Services, body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext
) -> None:
    """A member opened the app's Messages tab: suggested prompts, the agent app's way."""
    channel = event.get("channel")
    if not channel or not await services.claimed(body):
        return
    client = (await services.workspace(event_team(body, event, context), context)).poster.client
    try:
        await client.assistant_threads_setSuggestedPrompts(
            channel_id=channel,
            title=text.PANE_PROMPTS_TITLE,
            prompts=[{"title": t, "message": m} for t, m in text.PANE_PROMPTS],
        )
    except _SLACK_FAILURES as exc:
        logger.info("could not set suggested prompts: %s", exc)
