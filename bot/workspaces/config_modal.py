"""The `/rlm config edit` modal: every workspace setting in one form, for its admins.

`config_view` builds the modal (one text input per setting, holding the value the
workspace chose; blank means the operator's default). On submission the asker is checked
again with Slack (the form could be replayed by anyone), every value is checked against the
operator's bounds, and either all are saved or the form comes back with a message under
each value that cannot be used.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext
from slack_sdk.errors import SlackApiError

from bot.workspaces.config_command import CANNOT_CHECK_ADMIN, is_admin
from bot.workspaces.settings import (
    NAMES,
    SettingRefused,
    WorkspaceSettings,
    WorkspaceSettingsBook,
    parse_value,
)

logger = logging.getLogger("bot.config")

CALLBACK_ID = "rlm_config"
ACTION_ID = "value"
TITLE = "Workspace settings"
SUBMIT = "Save"
HINT = "Blank: the default, {default}."
NOT_ADMIN_IN_FORM = "Only a workspace admin or owner can change these settings."


def config_view(
    current: WorkspaceSettings, defaults: WorkspaceSettings, channel_id: str
) -> dict[str, Any]:
    """The modal for a workspace whose settings are `current`."""
    blocks = []
    for key, (column, meaning) in NAMES.items():
        element: dict[str, Any] = {
            "type": "plain_text_input",
            "action_id": ACTION_ID,
            "placeholder": {"type": "plain_text", "text": str(getattr(defaults, column))},
        }
        if column in current.chosen:
            element["initial_value"] = str(getattr(current, column))
        blocks.append(
            {
                "type": "input",
                "block_id": key,
                "optional": True,
                "label": {"type": "plain_text", "text": key},
                "hint": {
                    "type": "plain_text",
                    "text": f"{meaning[0].upper()}{meaning[1:]}. "
                    + HINT.format(default=getattr(defaults, column)),
                },
                "element": element,
            }
        )
    return {
        "type": "modal",
        "callback_id": CALLBACK_ID,
        "title": {"type": "plain_text", "text": TITLE},
        "submit": {"type": "plain_text", "text": SUBMIT},
        "private_metadata": json.dumps({"channel": channel_id}),
        "blocks": blocks,
    }


def read_form(
    view: dict[str, Any], book: WorkspaceSettingsBook
) -> tuple[dict[str, Any], dict[str, str]]:
    """(column -> value, block -> error) from a submitted form; None values: the default."""
    values = (view.get("state") or {}).get("values") or {}
    chosen: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for key in NAMES:
        text = ((values.get(key) or {}).get(ACTION_ID) or {}).get("value") or ""
        try:
            column, value = parse_value(key, text.strip() or "default", book.bounds)
        except SettingRefused as exc:
            errors[key] = str(exc).replace("`", "")
            continue
        chosen[column] = value
    return chosen, errors


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
