"""Reading the root model's replies: ```repl code blocks and FINAL(...) / FINAL_VAR(...)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_CODE_BLOCK = re.compile(r"```repl[ \t]*\n(.*?)(?:\n[ \t]*```|\Z)", re.DOTALL)
_FINAL_START = re.compile(r"^[ \t]*(FINAL_VAR|FINAL)\(", re.MULTILINE)


@dataclass(frozen=True)
class FinalAnswer:
    kind: str  # "text" | "var"
    value: str  # the answer text, or the variable's name


def find_code_blocks(reply: str) -> list[str]:
    """The code of every ```repl block, in order (an unclosed last block runs to the end)."""
    return [m.group(1) for m in _CODE_BLOCK.finditer(reply) if m.group(1).strip()]


def _outside_code(reply: str) -> str:
    # Keep offsets stable: blank out code blocks rather than cutting them.
    return re.sub(r"```.*?(?:```|\Z)", lambda m: " " * len(m.group(0)), reply, flags=re.DOTALL)


def _balanced(text: str, start: int) -> str | None:
    """The text from `start` up to the parenthesis that closes the one just before it."""
    depth, quote, i = 1, "", start
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "\"'" and not text[i - 1].isalnum():
            # a quote opening a string literal; apostrophes inside words ("don't") are text
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return text[start:i]
        i += 1
    return None


def find_final(reply: str) -> FinalAnswer | None:
    """The last FINAL(...) or FINAL_VAR(...) that starts a line outside code blocks."""
    text = _outside_code(reply)
    found: FinalAnswer | None = None
    for match in _FINAL_START.finditer(text):
        inner = _balanced(reply, match.end())
        if inner is None:
            # Unbalanced: take the rest of the reply, minus a trailing ")" if there is one.
            inner = reply[match.end() :].rstrip()
            inner = inner[:-1] if inner.endswith(")") else inner
        if match.group(1) == "FINAL_VAR":
            found = FinalAnswer("var", inner.strip().strip("\"'"))
        else:
            found = FinalAnswer("text", _unquote(inner.strip()))
    return found


def _unquote(text: str) -> str:
    for q in ('"""', "'''", '"', "'"):
        if len(text) >= 2 * len(q) and text.startswith(q) and text.endswith(q):
            return text[len(q) : -len(q)]
    return text


def truncate(text: str, limit: int) -> str:
    """`text` cut to about `limit` characters (head and tail kept) with a note saying so."""
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    tail = limit - head
    cut = len(text) - head - tail
    return (
        f"{text[:head]}\n... [output truncated: {cut} of {len(text)} characters omitted; "
        f"print less, or slices] ...\n{text[-tail:]}"
    )
