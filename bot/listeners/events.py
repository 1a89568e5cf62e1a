"""Events that bring a question or a file: mentions of the app, files shared in a channel.

A retried delivery (the same event_id) is dropped by `Services.claimed`; the work runs after
the ack, a mention's as one of its workspace's runs. A mention is first marked seen with a
👀 reaction (one call, before anything is read; left in place when the answer comes, so the
mark never flickers and costs no second call).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_bolt.async_app import AsyncApp, AsyncBoltContext
from slack_sdk.errors import SlackApiError

from bot.runs.keeping import database_away
from bot.runs.runner import Question
from bot.slack import messages
from bot.slack.api import event_team

if TYPE_CHECKING:
    from bot.services import Services

logger = logging.getLogger("bot.events")

SEEN_REACTION = "eyes"  # a mention's first visible sign: the app has it


def register_message_events(app: AsyncApp, services: Services) -> None:
    """Listeners for `app_mention`, `file_shared` and messages that share files."""
    claimed = services.claimed

    async def answer_mention(
        body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        team_id = event_team(body, event, context)
        channel, ts, thread_ts = event["channel"], event["ts"], event.get("thread_ts")
        try:
            if not await claimed(body):
                return
            ws = await services.workspace(team_id, context)
        except Exception as exc:  # the database is away: the asker hears so, in the thread
            if not database_away(exc):
                raise
            await services.poster.try_post(channel, messages.NOT_TAKEN, thread_ts=thread_ts or ts)
            return
        try:  # a nicety: without it (no reactions:write, say) the run goes on
            await ws.poster.client.reactions_add(channel=channel, timestamp=ts, name=SEEN_REACTION)
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            logger.info("could not mark the mention in %s seen: %s", channel, exc)
        await ws.keep_attached(event)
        question = await ws.question_in(event)
        if not question:
            await ws.poster.try_post(channel, messages.MENTION_USAGE, thread_ts=thread_ts or ts)
            return
        await ws.runner.ask(
            Question(
                team_id=team_id,
                channel_id=channel,
                user_id=event.get("user") or "",
                text=question,
                trigger="mention",
                scope="thread" if thread_ts else "channel",
                thread_ts=thread_ts or ts,
                exclude_ts=(ts,),
            )
        )

    @app.event("app_mention")
    async def on_mention(
        body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        services.spawn_run(
            answer_mention(body, event, context),
            name="mention",
            team_id=event_team(body, event, context),
            context=context,
        )

    async def keep_files(
        body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        if not await claimed(body):
            return
        team_id = event_team(body, event, context)
        uploads = (await services.workspace(team_id, context)).uploads
        if event.get("type") == "file_shared":
            found = [(event["channel_id"], event["file_id"], None, None)]
        else:
            found = [
                (event["channel"], f["id"], event["ts"], event.get("thread_ts"))
                for f in event.get("files") or []
            ]
        for channel, file_id, message_ts, thread_ts in found:
            await uploads.ingest(
                team_id=team_id,
                channel_id=channel,
                file_id=file_id,
                user_id=event.get("user_id") or event.get("user"),
                message_ts=message_ts,
                thread_ts=thread_ts,
            )

    @app.event("file_shared")
    async def on_file_shared(
        body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        services.spawn(keep_files(body, event, context), name="file_shared")

    @app.event({"type": "message", "subtype": "file_share"})
    async def on_file_message(
        body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        services.spawn(keep_files(body, event, context), name="file_share")
