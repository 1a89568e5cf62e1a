"""The messages between host and worker: their wire form, and the schema each message from
the worker must meet before the host acts on it.

A message is a small JSON header (at most `HEADER_LIMIT` bytes) followed by raw UTF-8 parts:
every long string, and every list of strings, travels as parts that the header points at
(`{"$part": i}`, `{"$parts": [first, count]}`). So no single JSON parse, encode or decode
ever runs over more than a bounded piece of what the other side sent, and a big map costs
the host many short steps instead of one that would hold the interpreter for seconds.
Stdlib only: the worker loads this file too, beside `_worker.py`.

Generated code can write to the protocol pipe, so everything from the worker is the other
side's choice: `check_message` accepts only the operations expected at that point, with
exactly the fields and types listed here, and raises `ProtocolError` otherwise.
"""

from __future__ import annotations

import codecs
import json
import struct
from collections.abc import Callable, Collection
from typing import Any

LENGTH = struct.Struct(">I")
HEADER_LIMIT = 1024 * 1024  # bytes of JSON in one header
MAX_PARTS = 1_000_000  # parts in one message
_INLINE = 4096  # characters of a string kept in the header; longer ones become parts
_DECODE_SLICE = 4 * 1024 * 1024  # bytes decoded in one call


class ProtocolError(Exception):
    """The worker sent something that is not a message of the protocol."""


# -- wire form -----------------------------------------------------------------------------


def pack(message: dict[str, Any]) -> bytes:
    """The whole message on the wire: header, then its parts, each length-prefixed."""
    return b"".join(pack_pieces(message))


def pack_pieces(message: dict[str, Any]) -> list[bytes]:
    """`pack`'s pieces, to write one by one without joining a long message into one copy."""
    parts: list[bytes] = []
    header = _lift(message, parts)
    header["$parts"] = len(parts)
    data = json.dumps(header, ensure_ascii=False).encode("utf-8")
    pieces = [LENGTH.pack(len(data)), data]
    for part in parts:
        pieces += [LENGTH.pack(len(part)), part]
    return pieces


def _lift(value: dict[str, Any], parts: list[bytes]) -> dict[str, Any]:
    lifted: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, str) and len(item) > _INLINE:
            lifted[key] = {"$part": len(parts)}
            parts.append(item.encode("utf-8"))
        elif isinstance(item, list) and item and all(isinstance(s, str) for s in item):
            lifted[key] = {"$parts": [len(parts), len(item)]}
            parts.extend(s.encode("utf-8") for s in item)
        elif isinstance(item, dict):
            lifted[key] = _lift(item, parts)
        else:
            lifted[key] = item
    return lifted


def header_size(prefix: bytes) -> int:
    """The length a header's prefix announces, if it is within `HEADER_LIMIT`."""
    (size,) = LENGTH.unpack(prefix)
    if size > HEADER_LIMIT:
        raise ProtocolError(f"a {size}-byte header, over the {HEADER_LIMIT}-byte limit")
    return int(size)


def parse_header(data: bytes) -> tuple[dict[str, Any], int]:
    """The header's fields and how many parts follow it."""
    try:
        header = json.loads(data)
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting deeper than any header
        raise ProtocolError("a message that is not a frame") from exc
    if not isinstance(header, dict):
        raise ProtocolError("a message without an operation")
    count = header.pop("$parts", 0)
    if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= MAX_PARTS:
        raise ProtocolError("a message with a bad count of parts")
    return header, count


def decode_parts(parts: list[bytes]) -> list[str]:
    """The parts as text, a bounded slice per call however long one part is."""
    texts = []
    for part in parts:
        if len(part) <= _DECODE_SLICE:
            try:
                texts.append(part.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise ProtocolError("a part that is not UTF-8") from exc
            continue
        decoder = codecs.getincrementaldecoder("utf-8")()
        pieces = []
        try:
            for start in range(0, len(part), _DECODE_SLICE):
                final = start + _DECODE_SLICE >= len(part)
                pieces.append(decoder.decode(part[start : start + _DECODE_SLICE], final))
        except UnicodeDecodeError as exc:
            raise ProtocolError("a part that is not UTF-8") from exc
        texts.append("".join(pieces))
    return texts


def attach_parts(header: dict[str, Any], texts: list[str], depth: int = 2) -> dict[str, Any]:
    """The header with each pointer replaced by the part(s) it names, down to `depth` levels
    of objects (no message nests deeper; the schema refuses whatever does)."""
    message: dict[str, Any] = {}
    for key, value in header.items():
        if isinstance(value, dict) and value.keys() == {"$part"}:
            message[key] = texts[_index(value["$part"], 1, len(texts))]
        elif isinstance(value, dict) and value.keys() == {"$parts"}:
            span = value["$parts"]
            if not (isinstance(span, list) and len(span) == 2):
                raise ProtocolError("a message pointing at parts it does not hold")
            first, count = _index(span[0], span[1], len(texts)), span[1]
            message[key] = texts[first : first + count]
        elif isinstance(value, dict) and depth > 1:
            message[key] = attach_parts(value, texts, depth - 1)
        else:
            message[key] = value
    return message


def _index(first: object, count: object, held: int) -> int:
    if (
        not isinstance(first, int)
        or not isinstance(count, int)
        or isinstance(first, bool)
        or count < 0
        or not 0 <= first <= held - count
    ):
        raise ProtocolError("a message pointing at parts it does not hold")
    return first


def read_message(read_exactly: Callable[[int], bytes], max_bytes: int) -> dict[str, Any]:
    """One whole message from a blocking reader (the worker's side, and the probe)."""
    header, count = parse_header(read_exactly(header_size(read_exactly(LENGTH.size))))
    parts, total = [], 0
    for _ in range(count):
        (size,) = LENGTH.unpack(read_exactly(LENGTH.size))
        total += size
        if total > max_bytes:
            raise ProtocolError(f"a message of over {max_bytes} bytes")
        parts.append(read_exactly(size))
    return attach_parts(header, decode_parts(parts))


# -- what the worker may send -----------------------------------------------------------------


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


# op -> {field: (required, check)}; a message holds "op" and nothing but these fields.
_Field = tuple[bool, Callable[[object], bool]]
SCHEMAS: dict[str, dict[str, _Field]] = {
    "ready": {"error": (False, _is_str), "missing": (False, _is_str_list)},
    "result": {"output": (True, _is_str), "error": (True, _is_bool), "final": (True, _is_final)},
    "llm_query": {"prompt": (True, _is_str)},
    "parallel_query": {"template": (True, _is_str), "chunks": (True, _is_str_list)},
    "variable": {"found": (True, _is_bool), "value": (False, _is_str)},
}


def check_operation(header: dict[str, Any], expected: Collection[str]) -> str:
    """The operation a header names, if it is one of the `expected` ones."""
    op = header.get("op")
    if not isinstance(op, str):
        raise ProtocolError("a message without an operation")
    if op not in expected:
        raise ProtocolError(f"an unexpected {op[:40]!r} message")
    return op


def check_message(message: dict[str, Any], expected: Collection[str]) -> dict[str, Any]:
    """`message` if it is one of the `expected` operations and fits its schema."""
    op = check_operation(message, expected)
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
    return message
