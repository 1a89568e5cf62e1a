"""The shape of what Slack sends, checked before anything reads it.

`problem(body)` says what is wrong with a parsed request body (None when it is fine): not a
JSON object, a string no Slack payload holds (NUL, a lone surrogate), or a field the app reads
(ids, timestamps, the event, the actions, the authorizations) of the wrong type or form. It is
shared by the HTTP edge (after the signature, before Bolt) and Socket Mode, so neither a
stranger's nor an odd signed body can reach a listener, the installation store or the
database as something they do not expect.
"""

from __future__ import annotations

import re
from typing import Any

# Slack ids (T…, C…, U…, E…, A…, F…) and the like: short, printable, no separators.
_ID = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
# Message timestamps: seconds, a dot, microseconds.
_TS = re.compile(r"[0-9]{1,12}(\.[0-9]{1,9})?")
_MAX_DEPTH = 64

# Fields the app (or Bolt, to authorize) reads, by where they sit: must be ids when present.
_TOP_IDS = ("team_id", "user_id", "channel_id", "enterprise_id", "api_app_id")
_EVENT_IDS = ("channel", "user", "channel_id", "file_id", "team", "user_team", "user_id")
_EVENT_TS = ("ts", "thread_ts", "event_ts")
_OBJECT_IDS = ("team", "user", "channel", "enterprise")  # a string id or {"id": …}
# A slash command's fields the listener reads without a default.
_COMMAND_IDS = ("team_id", "channel_id", "user_id")


def problem(body: object) -> str | None:
    """What is wrong with `body` for the app to read it, or None."""
    if not isinstance(body, dict):
        return "not a JSON object"
    bad = _bad_string(body)
    if bad:
        return bad
    found = _ids(body, _TOP_IDS, "")
    if found:
        return found
    for key in _OBJECT_IDS:
        value = body.get(key)
        if isinstance(value, dict):
            found = _ids(value, ("id", "team_id", "enterprise_id"), f"{key}.")
        elif value is not None and not _is_id(value):
            found = f"{key} is not an id"
        if found:
            return found
    view = body.get("view")
    if view is not None:
        found = (
            _ids(view, ("app_installed_team_id", "team_id"), "view.")
            if isinstance(view, dict)
            else "view is not an object"
        )
        if found:
            return found
    if "command" in body:
        if not isinstance(body["command"], str):
            return "command is not a string"
        missing = [k for k in _COMMAND_IDS if k not in body]
        if missing:
            return f"a command without {missing[0]}"
    return _authorizations(body) or _event(body) or _actions(body)


def _authorizations(body: dict[str, Any]) -> str | None:
    auths = body.get("authorizations")
    if auths is None:
        return None
    if not isinstance(auths, list) or not all(isinstance(a, dict) for a in auths):
        return "authorizations is not a list of objects"
    for auth in auths:
        found = _ids(auth, ("team_id", "enterprise_id", "user_id"), "authorizations.")
        if found:
            return found
    return None


def _event(body: dict[str, Any]) -> str | None:
    if "event" not in body:
        callback = body.get("type") == "event_callback"
        return "an event callback without an event" if callback else None
    event = body["event"]
    if not isinstance(event, dict):
        return "event is not an object"
    if not isinstance(event.get("type"), str):
        return "event without a type"
    # Some events carry the user or channel as an object (user_change, channel_created).
    found = _ids(event, _EVENT_IDS, "event.", objects_too=True)
    if found:
        return found
    for key in _EVENT_TS:
        if key in event and event[key] is not None and not _is_ts(event[key]):
            return f"event.{key} is not a timestamp"
    thread = event.get("assistant_thread")
    if thread is not None:
        if not isinstance(thread, dict):
            return "event.assistant_thread is not an object"
        found = _ids(thread, ("channel_id",), "event.assistant_thread.")
        if found:
            return found
        if "thread_ts" in thread and not _is_ts(thread["thread_ts"]):
            return "event.assistant_thread.thread_ts is not a timestamp"
    files = event.get("files")
    if files is not None and not (
        isinstance(files, list) and all(isinstance(f, dict) and _is_id(f.get("id")) for f in files)
    ):
        return "event.files is not a list of files"
    return None


def _actions(body: dict[str, Any]) -> str | None:
    actions = body.get("actions")
    if actions is None:
        return None
    if not isinstance(actions, list) or not all(isinstance(a, dict) for a in actions):
        return "actions is not a list of objects"
    for action in actions:
        if "action_id" in action and not isinstance(action["action_id"], str):
            return "actions.action_id is not a string"
        if "value" in action and not isinstance(action["value"], str | None):
            return "actions.value is not a string"
    return None


def _ids(
    obj: dict[str, Any], keys: tuple[str, ...], where: str, *, objects_too: bool = False
) -> str | None:
    for key in keys:
        value = obj.get(key)
        if value is None or (objects_too and isinstance(value, dict)):
            continue
        if not _is_id(value):
            return f"{where}{key} is not an id"
    return None


def _is_id(value: object) -> bool:
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def _is_ts(value: object) -> bool:
    return isinstance(value, str) and _TS.fullmatch(value) is not None


def _bad_string(body: dict[str, Any]) -> str | None:
    """A NUL or a lone surrogate in any key or string, or nesting deeper than Slack's."""
    stack: list[tuple[object, int]] = [(body, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > _MAX_DEPTH:
            return "nested too deep"
        if isinstance(item, str):
            if not _clean(item):
                return "a string with a NUL or a lone surrogate"
        elif isinstance(item, dict):
            for key, value in item.items():
                if not _clean(key):
                    return "a key with a NUL or a lone surrogate"
                stack.append((value, depth + 1))
        elif isinstance(item, list):
            stack.extend((value, depth + 1) for value in item)
    return None


def _clean(text: str) -> bool:
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")  # refuses lone surrogates
    except UnicodeEncodeError:
        return False
    return True
