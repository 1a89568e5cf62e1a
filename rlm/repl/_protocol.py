"""The frames the worker sends the host, and the schema each must meet before the host acts.

Generated code can write to the protocol pipe, so a frame's size, nesting and every field are
the other side's choice: `decode_frame` accepts only the operations the host expects at that
point, with exactly the fields and types listed here, and raises `ProtocolError` otherwise.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Collection
from typing import Any

HEADER = struct.Struct(">I")


class ProtocolError(Exception):
    """The worker sent something that is not a frame of the protocol."""


def _is_str(value: object) -> bool:
    return isinstance(value, str)


def _is_bool(value: object) -> bool:
    return isinstance(value, bool)


def _is_str_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _is_final(value: object) -> bool:
    """None, FINAL(text), FINAL_VAR(name) or FINAL_VAR(value): nothing else."""
    if value is None:
        return True
    if not isinstance(value, dict):
        return False
    if value.get("kind") == "text":
        return value.keys() == {"kind", "value"} and isinstance(value["value"], str)
    if value.get("kind") == "var" and value.keys() == {"kind", "name", "value"}:
        name, text = value["name"], value["value"]
        return (isinstance(name, str) and text is None) or (name is None and isinstance(text, str))
    return False


# op -> {field: (required, check)}; a frame holds "op" and nothing but these fields.
_Field = tuple[bool, Callable[[object], bool]]
SCHEMAS: dict[str, dict[str, _Field]] = {
    "ready": {"error": (False, _is_str), "missing": (False, _is_str_list)},
    "result": {"output": (True, _is_str), "error": (True, _is_bool), "final": (True, _is_final)},
    "llm_query": {"prompt": (True, _is_str)},
    "parallel_query": {"template": (True, _is_str), "chunks": (True, _is_str_list)},
    "variable": {"found": (True, _is_bool), "value": (False, _is_str)},
}


def decode_frame(payload: bytes, expected: Collection[str]) -> dict[str, Any]:
    """The frame in `payload` if it is one of the `expected` operations and fits its schema."""
    try:
        message = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting deeper than any frame
        raise ProtocolError("a message that is not a frame") from exc
    op = message.get("op") if isinstance(message, dict) else None
    if not isinstance(op, str):
        raise ProtocolError("a message without an operation")
    if op not in expected:
        raise ProtocolError(f"an unexpected {op[:40]!r} message")
    schema = SCHEMAS[op]
    for key, value in message.items():
        if key == "op":
            continue
        field = schema.get(key)
        if field is None:
            raise ProtocolError(f"a {op!r} message with an unknown field {key[:40]!r}")
        if not field[1](value):
            raise ProtocolError(f"a {op!r} message whose {key!r} has the wrong shape")
    missing = [key for key, (required, _) in schema.items() if required and key not in message]
    if missing:
        raise ProtocolError(f"a {op!r} message without {', '.join(missing)}")
    frame: dict[str, Any] = message
    return frame


def encode_frame(message: dict[str, Any]) -> bytes:
    data = json.dumps(message, ensure_ascii=False).encode("utf-8")
    return HEADER.pack(len(data)) + data
