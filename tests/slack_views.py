"""Modals on the loopback Slack server: views.open hands back the view it was given, with an
id, as Slack does (what the app sent stays readable in the recorded call)."""

from __future__ import annotations

import json
import secrets
from typing import Any

from slack_workspace import SlackError


class Views:
    def _m_views_open(self, params: dict[str, Any]) -> dict[str, Any]:
        view = params.get("view")
        if isinstance(view, str):
            view = json.loads(view)
        if not params.get("trigger_id") or not isinstance(view, dict):
            raise SlackError("invalid_arguments")
        return {"view": {**view, "id": "V" + secrets.token_hex(4).upper()}}
