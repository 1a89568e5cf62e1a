"""Listeners for the assistant pane, DMs with the app and App Home; `/rlm history`'s reply.

Thin like bot.app's: parse, check, hand over to the runner (the same runner as every other
question) or to `Home`. The pane reads the channel its user is viewing only after checking
that the channel is a channel (never a DM), that the app is in it and that the user is a
member; otherwise it says why and reads nothing. Its progress is the pane's status line.
An agent conversation (`agent_view`, bot.listeners.agent) is answered the same way, about
the channel the member has in view.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal

import aiohttp
from slack_bolt.async_app import AsyncApp, AsyncBoltContext
from slack_bolt.context.assistant.thread_context import AssistantThreadContext
from slack_bolt.context.assistant.thread_context_store.async_store import (
    AsyncAssistantThreadContextStore,
)
from slack_bolt.middleware.assistant.async_assistant import AsyncAssistant
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.listeners.agent import agent_view, open_messages, register_agent_view
from bot.listeners.home import Home
from bot.presence.pane import pane_status
from bot.runs.runner import Question
from bot.slack import surface_messages as text
from bot.slack.api import event_team
from bot.storage import PaneContext, Store

if TYPE_CHECKING:
    from bot.services import Services
    from bot.workspaces.tenants import Workspace

logger = logging.getLogger("bot.surfaces")

# conversations.members: Slack takes under 1,000 a page and recommends no more than 200.
MEMBERS_PAGE = 200
Access = Literal["ok", "cannot_read", "not_member"]
_SLACK_FAILURES = (SlackApiError, aiohttp.ClientError, TimeoutError)


class PaneContextStore(AsyncAssistantThreadContextStore):
    """Bolt's thread-context store, kept in our database rather than in message metadata."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def save(self, *, channel_id: str, thread_ts: str, context: dict[str, str]) -> None:
        await self.store.save_pane_context(
            channel_id=channel_id,
            thread_ts=thread_ts,
            team_id=str(context.get("team_id") or "unknown"),
            user_id=None,
            viewed_channel_id=context.get("channel_id"),
            viewed_team_id=context.get("team_id"),
        )

    async def find(self, *, channel_id: str, thread_ts: str) -> AssistantThreadContext | None:
        pane = await self.store.pane_context(channel_id, thread_ts)
        if pane is None or pane.viewed_channel_id is None:
            return None
        return AssistantThreadContext(
            {"channel_id": pane.viewed_channel_id, "team_id": pane.viewed_team_id or ""}
        )


async def viewed_channel_access(client: AsyncWebClient, channel_id: str, user_id: str) -> Access:
    """Whether the pane may read `channel_id` for `user_id`: a channel (not a DM or group
    DM) the app is in and the user is a member of."""
    try:
        info = (await client.conversations_info(channel=channel_id))["channel"]
    except _SLACK_FAILURES as exc:
        logger.info("conversations.info %s failed: %s", channel_id, exc)
        return "cannot_read"
    if info.get("is_im") or info.get("is_mpim") or not info.get("is_member"):
        return "cannot_read"
    cursor: str | None = None
    try:
        while True:
            reply = await client.conversations_members(
                channel=channel_id, limit=MEMBERS_PAGE, cursor=cursor
            )
            if user_id in (reply.get("members") or []):
                return "ok"
            cursor = (reply.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                return "not_member"
    except _SLACK_FAILURES as exc:
        logger.info("conversations.members %s failed: %s", channel_id, exc)
        return "cannot_read"


def register_surfaces(app: AsyncApp, services: Services) -> None:
    """Register the assistant pane, DM and App Home listeners, each served with its own
    workspace's token and settings. Call before the catch-all message listener."""
    store = services.store
    assistant = AsyncAssistant(thread_context_store=PaneContextStore(store))

    claimed = services.claimed

    async def remember_view(
        body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        thread = event["assistant_thread"]
        viewing = thread.get("context") or {}  # what the member has open beside the pane
        await store.save_pane_context(
            channel_id=thread["channel_id"],
            thread_ts=thread["thread_ts"],
            team_id=event_team(body, event, context),
            user_id=thread.get("user_id"),
            viewed_channel_id=viewing.get("channel_id"),
            viewed_team_id=viewing.get("team_id"),
        )

    async def start_pane(
        body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        if not await claimed(body):
            return
        await remember_view(body, event, context)
        thread = event["assistant_thread"]
        client = (await services.workspace(event_team(body, event, context), context)).poster.client
        try:
            await client.assistant_threads_setSuggestedPrompts(
                channel_id=thread["channel_id"],
                thread_ts=thread["thread_ts"],
                title=text.PANE_PROMPTS_TITLE,
                prompts=[{"title": t, "message": m} for t, m in text.PANE_PROMPTS],
            )
        except _SLACK_FAILURES as exc:
            logger.info("could not set suggested prompts: %s", exc)

    @assistant.thread_started
    async def on_pane_started(
        body: dict[str, Any], payload: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        services.spawn(start_pane(body, payload, context), name="pane_started")

    @assistant.thread_context_changed
    async def on_pane_context(
        body: dict[str, Any], payload: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        services.spawn(remember_view(body, payload, context), name="pane_context")

    async def answer_in_pane(
        body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        """A message in a DM thread: an assistant pane thread's, an agent conversation's or
        a plain DM thread's."""
        if not await claimed(body):
            return
        team_id, channel, thread_ts = (
            event_team(body, event, context),
            event["channel"],
            event["thread_ts"],
        )
        ws = await services.workspace(team_id, context)
        await ws.keep_attached(event)
        question = await ws.question_in(event)
        if not question:
            return  # a file alone: kept and acknowledged
        pane = await store.pane_context(channel, thread_ts)
        if pane is None:
            pane = await agent_view(store, channel, event.get("user"))
        await answer_in_view(ws, event, question, thread_ts, pane)

    async def answer_in_view(
        ws: Workspace,
        event: dict[str, Any],
        question: str,
        thread_ts: str,
        pane: PaneContext | None,
    ) -> None:
        """Answer in the DM thread `thread_ts`: about the channel in view when `pane` names
        one the asker may read, with the status line as progress; a plain DM (no `pane`)
        with a status message."""
        team_id, channel, user = ws.team_id, event["channel"], event.get("user") or ""
        client = ws.poster.client
        # A question that comes with files is about them, not about the channel in view.
        viewed = pane.viewed_channel_id if pane is not None and not event.get("files") else None
        if pane is not None and viewed is not None:
            refusal = await _refusal(client, pane.viewed_team_id, team_id, viewed, user)
            if refusal is not None:
                await ws.poster.try_post(channel, refusal, thread_ts=thread_ts)
                return
        progress: Literal["replies", "pane"] = "pane" if pane is not None else "replies"
        if progress == "pane":
            # Seen at once: the status line, with what Slack rotates under it meanwhile.
            await pane_status(
                client,
                channel,
                thread_ts,
                text.PANE_STATUS_THINKING,
                loading=text.PANE_LOADING_MESSAGES,
            )
            if await store.claim_event(f"pane-title:{channel}:{thread_ts}"):
                await _pane_call(  # the first question names the conversation
                    client.assistant_threads_setTitle,
                    channel_id=channel,
                    thread_ts=thread_ts,
                    title=text.pane_title(question),
                )
        await ws.runner.ask(
            Question(
                team_id=team_id,
                channel_id=channel,
                user_id=user,
                text=question,
                trigger="assistant" if pane is not None else "dm",
                # The viewed channel's history; else this conversation, question included
                # (it may be the text to work on).
                scope="channel" if viewed else "thread",
                thread_ts=thread_ts,
                exclude_ts=(event["ts"],) if viewed else (),
                context_channel_id=viewed,
                progress=progress,
            )
        )

    @assistant.user_message
    async def on_pane_message(
        body: dict[str, Any], payload: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        team_id = event_team(body, payload, context)
        services.spawn_run(answer_in_pane(body, payload, context), "pane_message", team_id, context)

    app.assistant(assistant)

    async def answer_dm(
        body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        if not await claimed(body):
            return
        team_id = event_team(body, event, context)
        ws = await services.workspace(team_id, context)
        await ws.keep_attached(event)
        question = await ws.question_in(event)
        if not question:
            return
        view = await agent_view(store, event["channel"], event.get("user"))
        if view is not None:  # agent_view: each message starts a conversation thread
            await answer_in_view(ws, event, question, event["ts"], view)
            return
        await ws.runner.ask(
            Question(
                team_id=team_id,
                channel_id=event["channel"],
                user_id=event.get("user") or "",
                text=question,
                trigger="dm",
                scope="thread",
                thread_ts=event["ts"],
            )
        )

    async def top_level_dm(body: dict[str, Any]) -> bool:
        event = body.get("event") or {}
        return (
            event.get("channel_type") == "im"
            and not event.get("thread_ts")
            and event.get("subtype") in (None, "file_share")
            and not event.get("bot_id")
        )

    @app.event("message", matchers=[top_level_dm])
    async def on_dm(body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext) -> None:
        services.spawn_run(
            answer_dm(body, event, context), "dm", event_team(body, event, context), context
        )

    async def publish_home(
        body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        team_id = event_team(body, event, context)
        try:
            await home_for(await services.workspace(team_id, context)).publish(
                team_id, event["user"]
            )
        except _SLACK_FAILURES as exc:
            logger.warning("could not publish App Home for %s: %s", event.get("user"), exc)

    @app.event("app_home_opened")
    async def on_home_opened(
        body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        if event.get("tab", "home") == "home":
            services.spawn(publish_home(body, event, context), name="home")
        elif event.get("tab") == "messages":  # agent_view's start of a conversation
            services.spawn(open_messages(services, body, event, context), name="messages")

    register_agent_view(app, services)


def home_for(ws: Workspace) -> Home:
    """App Home and history for one workspace, on its own token and budget."""
    return Home(client=ws.poster.client, store=ws.runner.store, budget=ws.runner.budget)


async def send_history(ws: Workspace, command: dict[str, Any]) -> None:
    """`/rlm history`: the channel's recent runs, to the one who asked only."""
    report = await home_for(ws).history(ws.team_id, command["channel_id"])
    await ws.poster.tell_user(
        command["channel_id"],
        command.get("user_id"),
        report,
        response_url=command.get("response_url"),
    )


async def _refusal(
    client: AsyncWebClient, viewed_team: str | None, team_id: str, viewed: str, user: str
) -> str | None:
    if viewed_team and viewed_team != team_id:
        return text.PANE_OTHER_WORKSPACE
    access = await viewed_channel_access(client, viewed, user)
    if access == "cannot_read":
        return text.PANE_CANNOT_READ
    if access == "not_member":
        return text.PANE_NOT_A_MEMBER
    return None


async def _pane_call(method: Any, **params: str) -> None:
    """A pane nicety (title, status): its failure costs nothing but the nicety."""
    try:
        await method(**params)
    except _SLACK_FAILURES as exc:
        logger.info("%s failed: %s", getattr(method, "__name__", "pane call"), exc)
