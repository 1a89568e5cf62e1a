"""The `/rlm config edit` modal's submission: saved only for the workspace's admins.

On submission the asker is checked again with Slack (the form could be replayed by anyone),
every value is checked against the operator's bounds (`config_form.read_form`), and either
all are saved or the form comes back with a message under each value that cannot be used.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext
from slack_sdk.errors import SlackApiError

from bot.workspaces.config_command import CANNOT_CHECK_ADMIN, is_admin
from bot.workspaces.config_form import CALLBACK_ID, read_form
from bot.workspaces.settings import (
    NAMES,
    WorkspaceSettingsBook,
)

logger = logging.getLogger("bot.config")

NOT_ADMIN_IN_FORM = "Only a workspace admin or owner can change these settings."


def add_config_modal_listener(app: AsyncApp, book: WorkspaceSettingsBook) -> None:
    @app.view(CALLBACK_ID)
    async def on_submit(
        ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        team_id = str(view.get("team_id") or (body.get("team") or {}).get("id") or "")
        user_id = str((body.get("user") or {}).get("id") or "")
        first = next(iter(NAMES))
        try:
            admin = await is_admin(context.client, user_id)
        except SlackApiError as exc:
            why = CANNOT_CHECK_ADMIN.format(error=exc.response.get("error") or "unknown error")
            await ack(response_action="errors", errors={first: why})
            return
        if not admin:
            logger.info("a non-admin submitted the settings form in %s; refused", team_id)
            await ack(response_action="errors", errors={first: NOT_ADMIN_IN_FORM})
            return
        chosen, errors = read_form(view, book)
        if errors:
            await ack(response_action="errors", errors=errors)
            return
        for column, value in chosen.items():
            await book.tenants.set_setting(team_id, column, value, user_id=user_id)
        logger.info("settings of %s saved from the form by an admin", team_id)
        await ack()
