"""The `/rlm config edit` form: every workspace setting in one modal, and reading it back.

`config_view` builds the modal (one text input per setting, holding the value the
workspace chose; blank means the operator's default); `read_form` checks every submitted
value against the operator's bounds. Pure functions: no Slack calls here.
"""

from __future__ import annotations

import json
from typing import Any

from bot.workspaces.settings import (
    NAMES,
    SettingRefused,
    WorkspaceSettings,
    WorkspaceSettingsBook,
    parse_value,
)

CALLBACK_ID = "rlm_config"
ACTION_ID = "value"
TITLE = "Workspace settings"
SUBMIT = "Save"
HINT = "Blank: the default, {default}."


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
