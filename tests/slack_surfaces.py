"""The loopback Slack server's surfaces beyond messages: reactions, the assistant pane, App
Home, channel members, permalinks and DMs with the app, strict about required arguments.

`SurfacesMixin` goes before `SlackWorkspace` in `SlackServer`'s bases; it keeps what the app
did (`reactions`, `home_views`, `pane_statuses`, `loading_messages`, `suggested_prompts`) for
tests to read. With `agent_view` set the app is on Slack's Agent messaging experience:
`setSuggestedPrompts` given a `thread_ts` then answers ok and does nothing, as Slack's does.
The event builders at the bottom make what Slack sends for these surfaces, on either
experience.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from slack_workspace import SlackError

_SURFACE_SCOPES = {
    "reactions.add": "reactions:write",
    "assistant.threads.setStatus": "assistant:write",
    "assistant.threads.setSuggestedPrompts": "assistant:write",
    "assistant.threads.setTitle": "assistant:write",
    "conversations.members": "channels:read",
}
# Slack's limits on what these methods take.
MAX_PROMPTS = 4
MAX_BLOCKS = 100
MAX_SECTION_TEXT = 3000
MAX_STATUS = 50
MAX_LOADING_MESSAGES = 10
READ_METHODS = ("conversations.history", "conversations.replies", "conversations.members")


def _required(params: dict[str, Any], *names: str) -> None:
    for name in names:
        if params.get(name) in (None, ""):
            raise SlackError("invalid_arguments", detail=f"missing required field: {name}")


def _json(value: Any, name: str) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise SlackError("invalid_arguments", detail=f"{name} is not JSON") from None
    return value


class SurfacesMixin:
    # Provided by SlackWorkspace.
    channels: dict[str, dict[str, Any]]
    users: dict[str, dict[str, Any]]
    files: dict[str, dict[str, Any]]
    missing_scopes: set[str]
    calls: list[Any]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reactions: list[tuple[str, str, str]] = []  # (channel, ts, name)
        self.home_views: dict[str, list[dict[str, Any]]] = {}  # user → views published
        self.pane_statuses: list[tuple[str, str, str]] = []  # (channel, thread_ts, status)
        self.suggested_prompts: list[dict[str, Any]] = []
        self.pane_titles: list[tuple[str, str, str]] = []
        self.members: dict[str, list[str]] = {}  # channel → user ids (default: every user)
        self.loading_messages: list[tuple[str, str, list[str]]] = []  # (channel, ts, messages)
        self.agent_view = False  # the app's experience: assistant_view unless set

    # -- set-up --------------------------------------------------------------------------------

    def add_dm(self, channel_id: str, user: str) -> None:
        """The DM (and assistant pane) between `user` and the app."""
        self.add_channel(channel_id, user)  # type: ignore[attr-defined]
        self.channels[channel_id] |= {"is_im": True, "user": user, "is_private": True}

    def set_members(self, channel_id: str, users: list[str]) -> None:
        self.members[channel_id] = list(users)

    # -- what the app did ----------------------------------------------------------------------

    def reads_of(self, channel_id: str) -> list[Any]:
        """Calls that read `channel_id`'s messages or members."""
        return [
            c
            for c in self.calls
            if c.method in READ_METHODS and c.params.get("channel") == channel_id
        ]

    def file_lookups_in(self, channel_id: str) -> list[Any]:
        """files.info calls and downloads for files shared only in `channel_id`."""
        theirs = {
            file_id
            for file_id, f in self.files.items()
            if set(f["shares"].get("public", {})) | set(f["shares"].get("private", {}))
            == {channel_id}
        }
        found = []
        for c in self.calls:
            if c.method == "files.info" and c.params.get("file") in theirs:
                found.append(c)
            elif c.method == "files.download" and c.path.split("/")[2] in theirs:
                found.append(c)
        return found

    # -- scopes --------------------------------------------------------------------------------

    def _scope(self, method: str, channel: dict[str, Any] | None = None) -> None:
        if (
            channel is not None
            and channel.get("is_im")
            and method
            in (
                "conversations.history",
                "conversations.replies",
            )
        ):
            if "im:history" in self.missing_scopes:
                raise SlackError("missing_scope", needed="im:history", provided="")
            return
        if method == "assistant.threads.setStatus":
            # Slack takes either scope for setStatus "for the time being".
            if {"assistant:write", "chat:write"} <= self.missing_scopes:
                raise SlackError("missing_scope", needed="chat:write", provided="")
            return
        needed = _SURFACE_SCOPES.get(method)
        if needed is not None:
            if channel is not None and channel.get("is_private") and needed == "channels:read":
                needed = "groups:read"
            if needed in self.missing_scopes:
                raise SlackError("missing_scope", needed=needed, provided="")
            return
        super()._scope(method, channel)  # type: ignore[misc]

    # -- methods -------------------------------------------------------------------------------

    def _m_reactions_add(self, params: dict[str, Any]) -> dict[str, Any]:
        _required(params, "channel", "timestamp", "name")
        channel = self._channel(params, "reactions.add")  # type: ignore[attr-defined]
        ts, name = str(params["timestamp"]), str(params["name"]).strip(":")
        if self._message(channel["id"], ts) is None:  # type: ignore[attr-defined]
            raise SlackError("message_not_found")
        if (channel["id"], ts, name) in self.reactions:
            raise SlackError("already_reacted")
        self.reactions.append((channel["id"], ts, name))
        return {}

    def _pane(self, params: dict[str, Any], method: str) -> dict[str, Any]:
        channel = self.channels.get(str(params.get("channel_id", "")))
        if channel is None:
            raise SlackError("channel_not_found")
        self._scope(method, channel)
        if not channel.get("is_im"):
            raise SlackError("invalid_channel_type")  # the pane lives in the app's DM
        return channel

    def _m_assistant_threads_setStatus(self, params: dict[str, Any]) -> dict[str, Any]:
        _required(params, "channel_id", "thread_ts")
        if "status" not in params:
            raise SlackError("invalid_arguments", detail="missing required field: status")
        channel = self._pane(params, "assistant.threads.setStatus")
        status = str(params["status"])
        if len(status) > MAX_STATUS:
            raise SlackError("invalid_arguments", detail="status too long")
        if params.get("loading_messages") is not None:
            loading = _json(params["loading_messages"], "loading_messages")
            if (
                not isinstance(loading, list)
                or not 1 <= len(loading) <= MAX_LOADING_MESSAGES
                or not all(isinstance(m, str) and m.strip() for m in loading)
            ):
                raise SlackError("invalid_arguments", detail="loading_messages: 1 to 10 strings")
            self.loading_messages.append((channel["id"], str(params["thread_ts"]), loading))
        self.pane_statuses.append((channel["id"], str(params["thread_ts"]), status))
        return {}

    def _m_assistant_threads_setSuggestedPrompts(self, params: dict[str, Any]) -> dict[str, Any]:
        _required(params, "channel_id", "prompts")
        channel = self._pane(params, "assistant.threads.setSuggestedPrompts")
        prompts = _json(params["prompts"], "prompts")
        if not isinstance(prompts, list) or not 1 <= len(prompts) <= MAX_PROMPTS:
            raise SlackError("invalid_arguments", detail="prompts: 1 to 4 items")
        for prompt in prompts:
            if not (isinstance(prompt, dict) and prompt.get("title") and prompt.get("message")):
                raise SlackError("invalid_arguments", detail="a prompt needs title and message")
        if self.agent_view and params.get("thread_ts"):
            return {}  # Slack's documented silent failure for agent apps
        self.suggested_prompts.append(
            {
                "channel": channel["id"],
                "thread_ts": params.get("thread_ts"),
                "title": params.get("title"),
                "prompts": prompts,
            }
        )
        return {}

    def _m_assistant_threads_setTitle(self, params: dict[str, Any]) -> dict[str, Any]:
        _required(params, "channel_id", "thread_ts", "title")
        channel = self._pane(params, "assistant.threads.setTitle")
        self.pane_titles.append((channel["id"], str(params["thread_ts"]), str(params["title"])))
        return {}

    def _m_views_publish(self, params: dict[str, Any]) -> dict[str, Any]:
        _required(params, "user_id", "view")
        user = str(params["user_id"])
        if user not in self.users:
            raise SlackError("user_not_found")
        view = _json(params["view"], "view")
        if not isinstance(view, dict) or view.get("type") != "home":
            raise SlackError("invalid_arguments", detail="view.type must be home")
        blocks = view.get("blocks")
        if not isinstance(blocks, list) or len(blocks) > MAX_BLOCKS:
            raise SlackError("invalid_blocks", detail="blocks: a list of at most 100")
        for block in blocks:
            _check_block(block)
        self.home_views.setdefault(user, []).append(view)
        return {"view": {"id": f"V{len(self.home_views[user])}", **view}}

    def _m_conversations_members(self, params: dict[str, Any]) -> dict[str, Any]:
        _required(params, "channel")
        channel = self.channels.get(str(params["channel"]))
        if channel is None or (channel["is_private"] and not channel["is_member"]):
            raise SlackError("channel_not_found")
        self._scope("conversations.members", channel)
        members = self.members.get(channel["id"], list(self.users))
        # Slack: "a limit value under 1000", 200 or fewer recommended; the default is 100.
        try:
            limit = int(params.get("limit") or 100)
        except ValueError:
            raise SlackError("invalid_limit") from None
        if not 1 <= limit <= MAX_MEMBERS_LIMIT:
            raise SlackError("invalid_limit", detail=f"limit must be 1-{MAX_MEMBERS_LIMIT}")
        start = _members_cursor_start(params.get("cursor"))
        page = members[start : start + limit]
        more = start + limit < len(members)
        cursor = _members_cursor(start + limit) if more else ""
        return {"members": page, "response_metadata": {"next_cursor": cursor}}

    def _m_chat_getPermalink(self, params: dict[str, Any]) -> dict[str, Any]:
        _required(params, "channel", "message_ts")
        channel = self.channels.get(str(params["channel"]))
        if channel is None:
            raise SlackError("channel_not_found")
        ts = str(params["message_ts"])
        if self._message(channel["id"], ts) is None:  # type: ignore[attr-defined]
            raise SlackError("message_not_found")
        return {
            "channel": channel["id"],
            "permalink": f"https://test.slack.com/archives/{channel['id']}/p{ts.replace('.', '')}",
        }


def _check_block(block: Any) -> None:
    if not isinstance(block, dict) or not block.get("type"):
        raise SlackError("invalid_blocks", detail="a block needs a type")
    text = block.get("text")
    if isinstance(text, dict):
        if text.get("type") not in ("mrkdwn", "plain_text") or not text.get("text"):
            raise SlackError("invalid_blocks", detail="a text object needs type and text")
        if len(text["text"]) > MAX_SECTION_TEXT:
            raise SlackError("invalid_blocks", detail="section text over 3000 characters")
    for element in block.get("elements") or []:
        if isinstance(element, dict) and element.get("type") in ("mrkdwn", "plain_text"):
            if not element.get("text"):
                raise SlackError("invalid_blocks", detail="an empty context element")


# -- events Slack sends ----------------------------------------------------------------------


def _now() -> str:
    return f"{time.time():.6f}"


def dm_message(channel: str, text: str, ts: str, *, user: str = "U1", **extra: Any) -> dict:
    """A message.im event: a user's message in their DM (or pane) with the app."""
    return {
        "type": "message",
        "channel": channel,
        "channel_type": "im",
        "user": user,
        "text": text,
        "ts": ts,
        "event_ts": ts,
        **extra,
    }


def pane_context(channel_id: str | None, *, team_id: str = "T1") -> dict[str, Any]:
    return {"channel_id": channel_id, "team_id": team_id} if channel_id else {}


def thread_started(
    channel: str, thread_ts: str, *, user: str = "U1", viewing: str | None = None
) -> dict:
    return {
        "type": "assistant_thread_started",
        "assistant_thread": {
            "user_id": user,
            "context": pane_context(viewing),
            "channel_id": channel,
            "thread_ts": thread_ts,
        },
        "event_ts": _now(),
    }


def context_changed(
    channel: str, thread_ts: str, *, user: str = "U1", viewing: str | None = None
) -> dict:
    return thread_started(channel, thread_ts, user=user, viewing=viewing) | {
        "type": "assistant_thread_context_changed"
    }


def home_opened(user: str = "U1", *, channel: str = "D1", tab: str = "home") -> dict:
    """`app_home_opened`; `tab="messages"` is agent_view's start of a conversation."""
    return {
        "type": "app_home_opened",
        "user": user,
        "channel": channel,
        "tab": tab,
        "event_ts": _now(),
    }


def app_context_changed(
    user: str = "U1",
    *,
    channel: str | None = "D1",
    viewing: str | None = None,
    team_id: str = "T1",
    entities: list[dict[str, Any]] | None = None,
) -> dict:
    """agent_view's `app_context_changed`: what `user` has open beside the conversation
    (`viewing` a channel, or the `entities` given; none: an empty context)."""
    if entities is None and viewing:
        entities = [{"type": "slack#/types/channel_id", "value": viewing, "team_id": team_id}]
    event: dict[str, Any] = {
        "type": "app_context_changed",
        "user": user,
        "context": {"entities": entities} if entities else {},
        "event_ts": _now(),
    }
    if channel is not None:
        event["channel"] = channel
    return event


# conversations.members: at most 999 per page (Slack: "under 1000"); cursors are opaque.
MAX_MEMBERS_LIMIT = 999


def _members_cursor(start: int) -> str:
    return base64.b64encode(f"members:{start}".encode()).decode()


def _members_cursor_start(cursor: Any) -> int:
    if not cursor:
        return 0
    try:
        kind, start = base64.b64decode(str(cursor), validate=True).decode().split(":")
        if kind != "members":
            raise ValueError(kind)
        return int(start)
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        raise SlackError("invalid_cursor") from None
