"""What the loopback Slack server needs for a run's live status, answer and controls:
messages with blocks (held to Slack's block limits), chat.update, streaming, permalinks,
views.open, the external file upload, and admins in users.info.

`RunSurfaces` is mixed into `SlackServer` ahead of `SlackWorkspace`; its handlers check
required arguments and limits as strictly as Slack does, and `thread_view` shows a thread
as a member would see it now (edits applied, blocks' text included).
"""

from __future__ import annotations

import json
import re
from typing import Any

from slack_workspace import BOT_ID, BOT_USER, SlackError, SlackWorkspace

TEXT_LIMIT = 40_000
MESSAGE_BLOCKS = 50
MODAL_BLOCKS = 100
SECTION_TEXT = 3000
MARKDOWN_TOTAL = 12_000
BUTTON_TEXT = 75
BUTTON_VALUE = 2000
ACTION_ID = 255
ACTIONS_ELEMENTS = 25
CONTEXT_ELEMENTS = 10
MODAL_TITLE = 24


def _decoded(value: Any) -> Any:
    """Blocks and file lists arrive as JSON strings in form posts, as lists in JSON posts."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise SlackError("invalid_arguments") from None
    return value


def check_blocks(raw: Any, *, limit: int = MESSAGE_BLOCKS) -> list[dict[str, Any]]:
    """Slack's limits on a list of blocks; `invalid_blocks` (with what broke) otherwise."""
    blocks = _decoded(raw)
    if not isinstance(blocks, list):
        raise SlackError("invalid_blocks", detail="blocks must be a list")
    if len(blocks) > limit:
        raise SlackError("invalid_blocks", detail=f"{len(blocks)} blocks, over {limit}")
    markdown = 0
    for block in blocks:
        kind = block.get("type")
        if kind == "section":
            text = block.get("text") or {}
            if not text.get("text") or len(text["text"]) > SECTION_TEXT:
                raise SlackError("invalid_blocks", detail="section text empty or too long")
        elif kind == "markdown":
            markdown += len(block.get("text") or "")
            if not block.get("text"):
                raise SlackError("invalid_blocks", detail="markdown block without text")
        elif kind == "context":
            elements = block.get("elements") or []
            if not elements or len(elements) > CONTEXT_ELEMENTS:
                raise SlackError("invalid_blocks", detail="context elements")
            if any(len(e.get("text") or "") > SECTION_TEXT for e in elements):
                raise SlackError("invalid_blocks", detail="context text too long")
        elif kind == "actions":
            elements = block.get("elements") or []
            if not elements or len(elements) > ACTIONS_ELEMENTS:
                raise SlackError("invalid_blocks", detail="actions elements")
            for element in elements:
                if (
                    len((element.get("text") or {}).get("text") or "") > BUTTON_TEXT
                    or len(str(element.get("value") or "")) > BUTTON_VALUE
                    or not element.get("action_id")
                    or len(element["action_id"]) > ACTION_ID
                ):
                    raise SlackError("invalid_blocks", detail="button over its limits")
        elif kind not in ("divider", "header", "rich_text", "image"):
            raise SlackError("invalid_blocks", detail=f"unknown block type {kind!r}")
    if markdown > MARKDOWN_TOTAL:
        raise SlackError("invalid_blocks", detail=f"markdown blocks hold {markdown} characters")
    return blocks


def blocks_text(blocks: list[dict[str, Any]]) -> str:
    """Every piece of text a member sees in `blocks`, in order, one per line."""
    seen: list[str] = []
    for block in blocks:
        if block.get("type") == "markdown":
            seen.append(block["text"])
        elif block.get("type") in ("section", "header"):
            seen.append(block["text"]["text"])
        elif block.get("type") == "context":
            seen.extend(e.get("text", "") for e in block["elements"])
        elif block.get("type") == "actions":
            seen.extend(e["text"]["text"] for e in block["elements"])
    return "\n".join(seen)


class RunSurfaces(SlackWorkspace):
    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.streaming = False  # whether chat.startStream and friends exist here
        self.views: list[dict[str, Any]] = []  # modals opened, in order
        self.uploads: dict[str, dict[str, Any]] = {}  # external uploads by file id
        self.admins: set[str] = set()
        self.upload_url_base: str | None = None  # hand out upload URLs elsewhere (attacks)

    # -- what members see ------------------------------------------------------------------

    def thread_view(self, channel_id: str, thread_ts: str) -> list[dict[str, Any]]:
        """The app's messages in a thread as they read now: text, blocks, and all seen text."""
        with self._lock:
            messages = [
                dict(m)
                for m in self.channels[channel_id]["messages"]
                if m.get("thread_ts") == thread_ts
                and m["ts"] != thread_ts
                and m.get("user") == BOT_USER
            ]
        for message in messages:
            message["seen"] = blocks_text(message.get("blocks") or []) or message["text"]
        return messages

    def seen(self, channel_id: str, thread_ts: str | None = None) -> list[str]:
        """What the app's messages in a channel (or one thread) say now, edits applied."""
        with self._lock:
            messages = [
                dict(m)
                for m in self.channels[channel_id]["messages"]
                if m.get("user") == BOT_USER
                and (thread_ts is None or m.get("thread_ts") == thread_ts)
            ]
        return [blocks_text(m.get("blocks") or []) or m["text"] for m in messages]

    def thread_texts(self, channel_id: str, thread_ts: str) -> list[str]:
        return [m["text"] for m in self.thread_view(channel_id, thread_ts)]

    # -- methods ---------------------------------------------------------------------------

    def _text_and_blocks(self, params: dict[str, Any], *, text_key: str = "text") -> None:
        if len(str(params.get(text_key) or "")) > TEXT_LIMIT:
            raise SlackError("msg_too_long")
        if params.get("blocks") is not None:
            params["blocks"] = check_blocks(params["blocks"])

    def _m_chat_postMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        self._text_and_blocks(params)
        user = str(params.get("channel") or "")
        if user in self.users:  # a user's id as channel: the app's DM with them, as Slack does
            params = {**params, "channel": f"D{user}"}
            if params["channel"] not in self.channels:
                self.add_channel(params["channel"], user, private=True)
        reply = super()._m_chat_postMessage(params)
        if params.get("blocks") is not None:
            message = self._message(reply["channel"], reply["ts"])
            assert message is not None
            message["blocks"] = params["blocks"]
        return reply

    def _m_chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        for name in ("channel", "ts"):
            if not params.get(name):
                raise SlackError("invalid_arguments", detail=f"{name} is required")
        if not params.get("text") and params.get("blocks") is None:
            raise SlackError("no_text")
        self._text_and_blocks(params)
        reply = super()._m_chat_update(params)
        message = self._message(reply["channel"], reply["ts"])
        assert message is not None
        if message.get("user") != BOT_USER:
            raise SlackError("cant_update_message")
        if params.get("blocks") is not None:
            message["blocks"] = params["blocks"]
        message["edits"] = int(message.get("edits") or 0) + 1
        return reply

    def _m_chat_getPermalink(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params, "chat.getPermalink", member=False)
        ts = str(params.get("message_ts") or "")
        if self._message(channel["id"], ts) is None:
            raise SlackError("message_not_found")
        return {
            "permalink": f"https://test.slack.com/archives/{channel['id']}/p{ts.replace('.', '')}"
        }

    def _m_chat_startStream(self, params: dict[str, Any]) -> dict[str, Any]:
        if not self.streaming:
            raise SlackError("unknown_method")
        channel = self._channel(params, "chat.postMessage")
        if not params.get("thread_ts"):
            raise SlackError("invalid_arguments", detail="thread_ts is required")
        ts = self.add_message(
            channel["id"],
            str(params.get("markdown_text") or ""),
            user=BOT_USER,
            thread_ts=params["thread_ts"],
            bot_id=BOT_ID,
            streaming=True,
        )
        return {"channel": channel["id"], "ts": ts}

    def _streamed(self, params: dict[str, Any]) -> dict[str, Any]:
        if not self.streaming:
            raise SlackError("unknown_method")
        channel = self._channel(params, "chat.postMessage")
        message = self._message(channel["id"], str(params.get("ts") or ""))
        if message is None or not message.get("streaming"):
            raise SlackError("message_not_in_streaming_state")
        return message

    def _m_chat_appendStream(self, params: dict[str, Any]) -> dict[str, Any]:
        message = self._streamed(params)
        if not params.get("markdown_text"):
            raise SlackError("invalid_arguments", detail="markdown_text is required")
        message["text"] += str(params["markdown_text"])
        return {"ts": message["ts"]}

    def _m_chat_stopStream(self, params: dict[str, Any]) -> dict[str, Any]:
        message = self._streamed(params)
        message["text"] += str(params.get("markdown_text") or "")
        if params.get("blocks") is not None:
            extra = check_blocks(params["blocks"])
            message["blocks"] = [{"type": "markdown", "text": message["text"]}, *extra]
            check_blocks(message["blocks"])
        message["streaming"] = False
        return {"ts": message["ts"]}

    def _m_views_open(self, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("trigger_id"):
            raise SlackError("invalid_arguments", detail="trigger_id is required")
        view = _decoded(params.get("view"))
        if not isinstance(view, dict) or view.get("type") != "modal":
            raise SlackError("invalid_arguments", detail="view must be a modal")
        title = (view.get("title") or {}).get("text") or ""
        if not title or len(title) > MODAL_TITLE:
            raise SlackError("invalid_arguments", detail="modal title empty or too long")
        check_blocks(view.get("blocks") or [], limit=MODAL_BLOCKS)
        with self._lock:
            self.views.append(view)
        return {"view": {"id": f"V{len(self.views)}", **view}}

    def _m_files_getUploadURLExternal(self, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("filename") or not str(params.get("length") or "").isdigit():
            raise SlackError("invalid_arguments", detail="filename and length are required")
        file_id = f"FU{len(self.uploads) + 1}"
        with self._lock:
            self.uploads[file_id] = {
                "name": params["filename"],
                "length": int(params["length"]),
                "content": None,
            }
        base = self.upload_url_base or f"{self.url}/upload"
        return {"upload_url": f"{base}/{file_id}", "file_id": file_id}

    def receive_upload(self, file_id: str, content: bytes) -> bool:
        with self._lock:
            upload = self.uploads.get(file_id)
            if upload is None:
                return False
            upload["content"] = content
        return True

    def _m_files_completeUploadExternal(self, params: dict[str, Any]) -> dict[str, Any]:
        files = _decoded(params.get("files"))
        if not isinstance(files, list) or not files:
            raise SlackError("invalid_arguments", detail="files is required")
        for entry in files:
            upload = self.uploads.get(str(entry.get("id")))
            if upload is None or upload["content"] is None:
                raise SlackError("file_not_found")
            if len(upload["content"]) != upload["length"]:
                raise SlackError("file_upload_size_mismatch")
        channel_id = params.get("channel_id")
        if channel_id:
            channel = self._channel({"channel": channel_id}, "chat.postMessage")
            for entry in files:
                upload = self.uploads[str(entry["id"])]
                upload.update(channel=channel["id"], thread_ts=params.get("thread_ts"))
                upload["comment"] = params.get("initial_comment")
        return {"files": [{"id": entry["id"], "title": entry.get("title")} for entry in files]}

    def _m_users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        reply = super()._m_users_info(params)
        user = dict(reply["user"])
        if user["id"] in self.admins:  # else what the workspace says (add_user(admin=...))
            user["is_admin"] = user["is_owner"] = True
        return {"user": user}


# The line that closes an answer (bot.slack.messages.answer_footer): how to tell an answer
# from a status in a thread where each run posts its own.
ANSWER_FOOTER = re.compile(r"_\d+ steps? · \d+\.\d s_$")
