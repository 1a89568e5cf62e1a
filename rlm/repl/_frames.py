"""The host's reading of the worker's messages: checked, and held to size before they are
kept in the host's memory.

Generated code can write to the protocol pipe, so every size, count and shape in a frame is
the other side's choice. A message may keep at most `max_bytes`; and the texts that end up
in front of people, a cell's output and an answer (a FINAL value, or the variable FINAL_VAR
names), are kept only up to their cap in characters: the bytes past it are read from the pipe
and thrown away as they come, and the text kept ends with a note saying how much was left out.
"""

from __future__ import annotations

import asyncio
import codecs
from collections.abc import Collection, Mapping
from typing import Any

from rlm.repl._protocol import (
    LENGTH,
    ProtocolError,
    attach_parts,
    check_message,
    check_operation,
    decode_parts,
    header_size,
    parse_header,
)

# Which text fields of which messages are capped, and by which cap ("output" or "answer").
CAPPED: dict[str, dict[tuple[str, ...], str]] = {
    "result": {("output",): "output", ("final", "value"): "answer", ("final", "name"): "answer"},
    "variable": {("value",): "answer"},
}
MSG_CUT = {
    "output": "\n[The output was cut here: {left:,} more characters were left out, past the "
    "limit of {limit:,}.]",
    "answer": "\n\n[The answer was cut here: {left:,} more characters were left out, past the "
    "limit of {limit:,}.]",
}
_BIG_MESSAGE = 1024 * 1024  # parts past this are decoded off the event loop
_CHUNK = 64 * 1024
_UTF8_CONTINUATION = bytes(range(0x80, 0xC0))  # every other byte starts a character


def cut_text(text: str, cap: str, limit: int, left: int = 0) -> tuple[str, int]:
    """`text` within `limit` characters, with the note if anything was left out (`left`:
    characters already left out before this text); returns (text, characters left out)."""
    left += max(0, len(text) - limit)
    if not left:
        return text, 0
    return text[:limit] + MSG_CUT[cap].format(left=left, limit=limit), left


async def receive(
    stream: asyncio.StreamReader,
    expected: Collection[str],
    *,
    max_bytes: int,
    caps: Mapping[str, int],
) -> tuple[dict[str, Any], dict[str, int]]:
    """The next message, checked, and per cap the characters it left out."""
    header, count = parse_header(await stream.readexactly(header_size(await _prefix(stream))))
    op = check_operation(header, expected)  # before any part is read
    capped = CAPPED.get(op)
    kept_at = _part_caps(header, capped, caps) if capped is not None else {}
    parts: list[bytes] = []
    left_out: dict[int, int] = {}
    total = 0
    for index in range(count):
        (size,) = LENGTH.unpack(await _prefix(stream))
        cap = kept_at.get(index)
        # A capped message keeps only what its capped fields point at, and of that no more
        # than the cap could need (4 bytes a character at most).
        keep = size if capped is None else min(size, 0 if cap is None else cap[1] * 4 + 4)
        total += keep
        if total > max_bytes:
            raise ProtocolError(f"a message of over {max_bytes // 2**20} MB")
        parts.append(await stream.readexactly(keep))
        if keep < size:
            left_out[index] = await _discard(stream, size - keep)
        if index % 512 == 511:
            await asyncio.sleep(0)  # buffered parts are read without a pause: make one
    if capped is not None:
        texts = [_decode_kept(part, index in left_out) for index, part in enumerate(parts)]
    elif total > _BIG_MESSAGE or count > 512:
        texts = await asyncio.to_thread(decode_parts, parts)
    else:
        texts = decode_parts(parts)
    message = check_message(attach_parts(header, texts), expected)
    cut: dict[str, int] = {}
    for path, name in (capped or {}).items():
        pointer = _at(header, path)
        prior = left_out.get(pointer["$part"], 0) if _is_part(pointer) else 0
        text = _at(message, path)
        if isinstance(text, str):
            text, left = cut_text(text, name, caps[name], prior)
            _put(message, path, text)
            if left:
                cut[name] = cut.get(name, 0) + left
    return message, cut


async def _prefix(stream: asyncio.StreamReader) -> bytes:
    return await stream.readexactly(LENGTH.size)


def _part_caps(
    header: dict[str, Any], capped: dict[tuple[str, ...], str], caps: Mapping[str, int]
) -> dict[int, tuple[str, int]]:
    """Part index -> (cap, limit) for each part a capped field points at."""
    found: dict[int, tuple[str, int]] = {}
    for path, name in capped.items():
        pointer = _at(header, path)
        if _is_part(pointer):
            index = pointer["$part"]
            if index not in found or caps[name] > found[index][1]:
                found[index] = (name, caps[name])
    return found


def _is_part(value: object) -> bool:
    if not isinstance(value, dict) or value.keys() != {"$part"}:
        return False
    index = value["$part"]
    return isinstance(index, int) and not isinstance(index, bool) and index >= 0


def _at(message: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = message
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _put(message: dict[str, Any], path: tuple[str, ...], text: str) -> None:
    for key in path[:-1]:
        message = message[key]
    message[path[-1]] = text


async def _discard(stream: asyncio.StreamReader, size: int) -> int:
    """Read `size` bytes and keep none; returns how many characters they held."""
    characters = 0
    while size:
        chunk = await stream.readexactly(min(size, _CHUNK))
        size -= len(chunk)
        characters += len(chunk.translate(None, _UTF8_CONTINUATION))
    return characters


def _decode_kept(part: bytes, cut: bool) -> str:
    """A kept part as text; one that was cut may end inside a character, which is dropped."""
    if not cut:
        return decode_parts([part])[0]
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        return decoder.decode(part, final=False)
    except UnicodeDecodeError as exc:
        raise ProtocolError("a part that is not UTF-8") from exc
