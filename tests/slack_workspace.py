"""The workspace behind the loopback Slack server: users, channels, messages, threads, files,
and the Web API methods that read and change them (with Slack's errors and cursors).
"""

from __future__ import annotations

import base64
import threading
import time
import urllib.parse
from typing import Any

BOT_USER = "UBOT"
BOT_ID = "BBOT"

# The scope each method needs; private channels need groups:history instead.
_SCOPES = {
    "chat.postMessage": "chat:write",
    "chat.update": "chat:write",
    "chat.postEphemeral": "chat:write",
    "conversations.history": "channels:history",
    "conversations.replies": "channels:history",
    "conversations.info": "channels:read",
    "files.info": "files:read",
    "users.info": "users:read",
}


class SlackWorkspace:
    """State and method handlers; `SlackServer` serves them over HTTP."""

    def __init__(self, *, token: str, team_id: str) -> None:
        self.token = token
        self.team_id = team_id
        self.missing_scopes: set[str] = set()
        self.users: dict[str, dict[str, Any]] = {}
        self.channels: dict[str, dict[str, Any]] = {}
        self.files: dict[str, dict[str, Any]] = {}
        self.url = ""
        self._lock = threading.Lock()
        self._last_ts = 0.0

    def add_user(
        self,
        user_id: str,
        name: str,
        *,
        display_name: str = "",
        admin: bool = False,
        owner: bool = False,
    ) -> None:
        self.users[user_id] = {
            "id": user_id,
            "name": name.lower(),
            "real_name": name,
            "profile": {"real_name": name, "display_name": display_name},
            "is_admin": admin or owner,  # as Slack reports them: owners are admins too
            "is_owner": owner,
            "is_primary_owner": False,
        }

    def add_channel(
        self, channel_id: str, name: str, *, member: bool = True, private: bool = False
    ) -> None:
        self.channels[channel_id] = {
            "id": channel_id,
            "name": name,
            "is_private": private,
            "is_member": member,
            "is_archived": False,
            "messages": [],
        }

    def next_ts(self) -> str:
        with self._lock:
            self._last_ts = max(time.time(), self._last_ts + 0.000001)
            return f"{self._last_ts:.6f}"

    def add_message(
        self,
        channel_id: str,
        text: str,
        *,
        user: str | None = None,
        ts: str | None = None,
        thread_ts: str | None = None,
        **extra: Any,
    ) -> str:
        ts = ts or self.next_ts()
        message: dict[str, Any] = {"type": "message", "ts": ts, "text": text, **extra}
        if user:
            message["user"] = user
        if thread_ts and thread_ts != ts:
            message["thread_ts"] = thread_ts
            parent = self._message(channel_id, thread_ts)
            if parent is not None:
                parent["thread_ts"] = thread_ts
                parent["reply_count"] = int(parent.get("reply_count") or 0) + 1
        with self._lock:
            self.channels[channel_id]["messages"].append(message)
        return ts

    def add_file(
        self,
        file_id: str,
        name: str,
        content: bytes,
        *,
        channel_id: str,
        user: str,
        mimetype: str = "text/plain",
        share_ts: str | None = None,
        thread_ts: str | None = None,
        size: int | None = None,
        url_private: str | None = None,
        html_instead: bool = False,
    ) -> dict[str, Any]:
        """A file shared in `channel_id` (with its share message) and its download URL."""
        share_ts = share_ts or self.add_message(
            channel_id,
            "",
            user=user,
            thread_ts=thread_ts,
            subtype="file_share",
            files=[{"id": file_id, "name": name}],
        )
        share: dict[str, Any] = {"ts": share_ts}
        if thread_ts:
            share["thread_ts"] = thread_ts
        url = url_private or f"{self.url}/files-pri/{file_id}/{urllib.parse.quote(name)}"
        private = self.channels[channel_id]["is_private"]
        file = {
            "id": file_id,
            "name": name,
            "title": name,
            "mimetype": mimetype,
            "size": len(content) if size is None else size,
            "user": user,
            "url_private": url,
            "url_private_download": url + "?download=1" if url_private is None else url,
            "shares": {"private" if private else "public": {channel_id: [share]}},
            "_content": content,
            "_html_instead": html_instead,
        }
        self.files[file_id] = file
        return file

    def message_with(self, channel_id: str, prefix: str) -> dict[str, Any]:
        """The first message in `channel_id` whose text starts with `prefix`."""
        with self._lock:
            for message in self.channels[channel_id]["messages"]:
                if str(message.get("text", "")).startswith(prefix):
                    return dict(message)
        raise LookupError(f"no message starting {prefix!r} in {channel_id}")

    def _scope(self, method: str, channel: dict[str, Any] | None = None) -> None:
        needed = _SCOPES.get(method, "")
        if channel is not None and channel["is_private"] and needed.startswith("channels:"):
            needed = needed.replace("channels:", "groups:")
        if needed in self.missing_scopes:
            raise SlackError("missing_scope", needed=needed, provided="")

    def _channel(self, params: dict[str, Any], method: str, *, member: bool = True) -> Any:
        channel = self.channels.get(str(params.get("channel", "")))
        if channel is None:
            raise SlackError("channel_not_found")
        self._scope(method, channel)
        if member and not channel["is_member"]:
            raise SlackError("not_in_channel")
        return channel

    def _message(self, channel_id: str, ts: str) -> dict[str, Any] | None:
        with self._lock:
            for message in self.channels[channel_id]["messages"]:
                if message["ts"] == ts:
                    return message
        return None

    def _m_auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": "https://test.slack.com/",
            "team": "Test",
            "user": "rlm",
            "team_id": self.team_id,
            "user_id": BOT_USER,
            "bot_id": BOT_ID,
        }

    def _m_apps_connections_open(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"url": self.url.replace("http://", "ws://") + "/socket"}

    def _m_chat_postMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params, "chat.postMessage")
        if channel["is_archived"]:
            raise SlackError("is_archived")
        if not str(params.get("text") or "").strip():
            raise SlackError("no_text")
        ts = self.add_message(
            channel["id"],
            str(params["text"]),
            user=BOT_USER,
            thread_ts=params.get("thread_ts"),
            bot_id=BOT_ID,
        )
        return {"channel": channel["id"], "ts": ts, "message": self._message(channel["id"], ts)}

    def _m_chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params, "chat.update")
        message = self._message(channel["id"], str(params.get("ts")))
        if message is None:
            raise SlackError("message_not_found")
        message["text"] = params.get("text", "")
        return {"channel": channel["id"], "ts": message["ts"], "text": message["text"]}

    def _m_chat_postEphemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        self._channel(params, "chat.postEphemeral")
        if str(params.get("user")) not in self.users:
            raise SlackError("user_not_found")
        return {"message_ts": self.next_ts()}

    def _m_conversations_info(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params, "conversations.info", member=False)
        return {"channel": {k: v for k, v in channel.items() if k != "messages"}}

    def _m_conversations_history(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params, "conversations.history")
        oldest = float(params.get("oldest") or 0)
        latest = float(params.get("latest") or "inf")
        with self._lock:
            top = [
                m
                for m in channel["messages"]
                if m.get("thread_ts", m["ts"]) == m["ts"] and oldest < float(m["ts"]) <= latest
            ]
        top.sort(key=lambda m: float(m["ts"]), reverse=True)
        return _page(top, params)

    def _m_conversations_replies(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params, "conversations.replies")
        ts = str(params.get("ts"))
        with self._lock:
            thread = [m for m in channel["messages"] if m["ts"] == ts or m.get("thread_ts") == ts]
        if not thread:
            raise SlackError("thread_not_found")
        thread.sort(key=lambda m: float(m["ts"]))
        return _page(thread, params)

    def _m_files_info(self, params: dict[str, Any]) -> dict[str, Any]:
        self._scope("files.info")
        file = self.files.get(str(params.get("file")))
        if file is None:
            raise SlackError("file_not_found")
        return {"file": {k: v for k, v in file.items() if not k.startswith("_")}}

    def _m_users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        self._scope("users.info")
        user = self.users.get(str(params.get("user")))
        if user is None:
            raise SlackError("user_not_found")
        return {"user": user}


class SlackError(Exception):
    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


def _page(items: list[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
    limit = max(1, min(int(params.get("limit") or 100), 1000))
    cursor = params.get("cursor") or ""
    start = int(base64.b64decode(cursor).decode().removeprefix("next:")) if cursor else 0
    page = items[start : start + limit]
    more = start + limit < len(items)
    next_cursor = base64.b64encode(f"next:{start + limit}".encode()).decode() if more else ""
    return {
        "messages": [dict(m) for m in page],
        "has_more": more,
        "response_metadata": {"next_cursor": next_cursor},
    }
