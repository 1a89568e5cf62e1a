"""`/rlm`: the slash command's listener, parsed and acknowledged here, handed over after.

`ask` starts a run; `history`, `config` and `forget` answer after the ack; `usage` and
`help` answer in the ack itself.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.listeners.lifecycle import forget_channel
from bot.listeners.surfaces import send_history
from bot.ops.isolation import sandbox_report_for
from bot.runs.admission import NotTaken
from bot.runs.keeping import database_away
from bot.runs.runner import Question
from bot.slack import admin_messages, messages
from bot.slack.api import serving_team
from bot.workspaces.config_command import config_reply, is_admin
from rlm import provider_limits

if TYPE_CHECKING:
    from bot.services import Services
    from bot.workspaces.tenants import Workspace

COMMAND = "/rlm"
ADMIN_CHECK_SECONDS = 1.5  # inside the ack's three seconds


async def asked_by_admin(client: AsyncWebClient, user_id: str) -> bool:
    """Whether a workspace admin asks; False when Slack cannot say in time (money and the
    like show only to admins, so unknown is not one)."""
    try:
        async with asyncio.timeout(ADMIN_CHECK_SECONDS):
            return await is_admin(client, user_id)
    except (SlackApiError, TimeoutError, KeyError, TypeError):
        return False


def register_commands(app: AsyncApp, services: Services) -> None:
    """The `/rlm` listener; each verb is acknowledged within Slack's 3 seconds."""

    @app.command(COMMAND)
    async def on_command(ack: AsyncAck, command: dict[str, Any], context: AsyncBoltContext) -> None:
        words = (command.get("text") or "").split(None, 1)
        verb = words[0].lower() if words else "help"
        question = words[1].strip() if len(words) > 1 else ""
        if verb == "help" or (verb == "ask" and not question):
            await ack(text=messages.USAGE, response_type="ephemeral")
            return
        team_id = serving_team(context) or str(command["team_id"])  # the authorizing one
        try:
            ws = await services.workspace(team_id, context)
        except Exception as exc:  # the database is away: say so in the ack, not with a 500
            if not database_away(exc):
                raise
            await ack(text=messages.NOT_TAKEN, response_type="ephemeral")
            return
        runner = ws.runner
        if verb == "config":
            await ack()
            services.spawn(answer_config(ws, command, question), name="config")
            return
        if verb == "history":
            await ack()
            services.spawn(send_history(ws, command), name="history")
            return
        if verb == "usage":
            # Both ask Slack who the user is, at once: the ack has three seconds.
            admin, sandbox = await asyncio.gather(
                asked_by_admin(ws.poster.client, command["user_id"]),
                sandbox_report_for(
                    ws.poster.client, command["user_id"], runner.engine.sandbox_limits
                ),
            )
            report = await runner.budget.usage_report(team_id, money=admin)
            report += admin_messages.provider_limits_report(provider_limits())
            report += sandbox
            await ack(text=report, response_type="ephemeral")
            return
        if verb == "forget":
            await ack()
            services.spawn(forget_channel(services, ws, command), name="forget")
            return
        if verb != "ask":
            await ack(text=messages.unknown_subcommand(words[0]), response_type="ephemeral")
            return
        asked = Question(
            team_id=team_id,
            channel_id=command["channel_id"],
            user_id=command["user_id"],
            text=question,
            trigger="command",
            scope="channel",
            response_url=command.get("response_url"),
        )
        try:  # stored before the ack, so a question that cannot be is told so in it
            admitted = await runner.admit(asked)
        except NotTaken:
            await ack(text=messages.NOT_TAKEN, response_type="ephemeral")
            return
        await ack()
        services.spawn_run(
            runner.ask(asked, admitted),
            name="command",
            team_id=team_id,
            context=context,
        )

    async def answer_config(ws: Workspace, command: dict[str, Any], text: str) -> None:
        assert services.tenants is not None
        reply = await config_reply(
            book=services.tenants.book,
            client=ws.poster.client,
            team_id=ws.team_id,
            user_id=command["user_id"],
            text=text,
            trigger_id=command.get("trigger_id"),
            channel_id=command["channel_id"],
        )
        if not reply:  # the settings form opened
            return
        await ws.poster.tell_user(
            command["channel_id"],
            command["user_id"],
            reply,
            response_url=command.get("response_url"),
        )
