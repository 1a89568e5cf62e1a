"""Model-written Markdown made harmless to Slack: no pings, mentions or forged links.

Slack reads `<…>` as its own markup (`<!channel>`, `<@U1>`, `<#C1>`, `<!subteam^S1>`,
`<!date^…>`, `<url|label>`). What is code and what is text is decided by a CommonMark parser
(markdown-it-py), not by hand: outside code every `<` becomes `&lt;` (shown as `<`, never
parsed); inside code spans, fenced and indented code, a `<` that could open Slack markup
becomes a look-alike, since Slack's docs do not promise that code is left unparsed. The rule
for code is also applied everywhere, so a parse that differs from Slack's cannot let markup
through: at worst code shows `&lt;`.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.rules_inline import StateInline

# Shown in place of a `<` in code that Slack could read as markup.
LOOKALIKE_LT = "\u2039"  # ‹

# Invisible characters a payload may put between `<` and `!`, `@` or `#` (Unicode Cf and
# fillers): skipped when judging what a `<` opens.
_INVISIBLE = (
    "\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u2028-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\U000e0000-\U000e007f"
)
# A `<` that may open Slack markup: a special mention, user, channel or group (`!`, `@`,
# `#`), a URL with a scheme, or anything with a `|` label before the next `<` or `>`.
# `[^<>]*` stops at the next `<`, so the scan over a text is linear.
_MARKUP_LT = re.compile(
    rf"<(?=[{_INVISIBLE}\s]*[!@#]|[{_INVISIBLE}]*[A-Za-z][A-Za-z0-9+.\-]*:|[^<>]*\|)"
)

# Link label brackets (escaped ones too: Slack may not honour the escape), and label text
# that reads as an address, which would forge where the link goes.
_BRACKET = re.compile(r"[\[\]]")
_ADDRESS_LIKE = re.compile(r"://|\bwww\.|\b[\w-]+\.[a-z]{2,}\b", re.IGNORECASE)

_PIECE = 256 * 1024
_NEWLINE = re.compile("\n")

_md = MarkdownIt("commonmark")
_md.disable("inline", ignoreInvalid=True)  # inline parsing is run per block below
_backticks = _md.inline.ruler.__rules__[_md.inline.ruler.__find__("backticks")].fn


def _recording_backticks(state: StateInline, silent: bool) -> bool:
    """markdown-it's own code span rule, noting where each code span lies in its block."""
    start, before = state.pos, len(state.tokens)
    found = _backticks(state, silent)
    if (
        found
        and not silent
        and len(state.tokens) > before
        and state.tokens[-1].type == "code_inline"
        and state.src is state.env.get("src")
    ):
        state.env["spans"].append((start, state.pos))
    return found


_md.inline.ruler.at("backticks", _recording_backticks)


def normalize(text: str) -> str:
    """Line ends and NULs as CommonMark reads them, so line numbers agree with the parser."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\0", "\ufffd")


def defuse_code(text: str) -> str:
    """Every `<` that could open Slack markup replaced by a look-alike; the rest as written.
    For text shown as code, and for file contents. A long text is done in pieces cut just
    before a `<` (where no match can straddle), so a worker thread lets the loop run between."""
    if len(text) <= _PIECE:
        return _MARKUP_LT.sub(LOOKALIKE_LT, text)
    out: list[str] = []
    pos = 0
    while pos < len(text):
        cut = text.find("<", pos + _PIECE)
        cut = len(text) if cut < 0 else cut
        out.append(_MARKUP_LT.sub(LOOKALIKE_LT, text[pos:cut]))
        pos = cut
    return "".join(out)


def defuse_markdown(markdown: str) -> str:
    """`markdown` as Slack's `markdown` block may show it: Slack markup inert everywhere,
    code as written except for look-alikes, and no link labelled with an address."""
    text = normalize(markdown)
    regions = code_regions(text)
    unforged = _unforge_links(text, regions)
    if unforged is not text:
        text, regions = unforged, code_regions(unforged)
    out: list[str] = []
    pos = 0
    for start, end in regions:
        out.append(text[pos:start].replace("<", "&lt;"))
        out.append(defuse_code(text[start:end]))
        pos = end
    out.append(text[pos:].replace("<", "&lt;"))
    return "".join(out)


def _unforge_links(text: str, regions: list[tuple[int, int]]) -> str:
    """Link labels that look like an address (`[https://slack.com/reset](https://evil…)`,
    or the reference forms `[…][ref]` and `[…]`) lose their brackets outside code, so the
    label is plain text and the real target, if any, shows beside it. Linear: brackets are
    paired with a stack and addresses found by one scan."""
    if "[" not in text or "]" not in text:
        return text
    region_starts = [start for start, _ in regions]

    def in_code(at: int) -> bool:
        i = bisect_right(region_starts, at) - 1
        return i >= 0 and at < regions[i][1]

    addresses = [(m.start(), m.end()) for m in _ADDRESS_LIKE.finditer(text)]
    address_starts = [start for start, _ in addresses]
    drop: set[int] = set()
    opened: list[int] = []
    for match in _BRACKET.finditer(text):
        at = match.start()
        if text[at] == "[":
            opened.append(at)
            continue
        if not opened:
            continue
        start = opened.pop()
        i = bisect_right(address_starts, start)
        if i < len(addresses) and addresses[i][1] <= at and not in_code(start):
            drop.update((start, at))
    if not drop:
        return text
    out: list[str] = []
    pos = 0
    for at in sorted(drop):
        out.append(text[pos:at])
        if text[at] == "]" and text.startswith(("(", "["), at + 1):
            out.append(" ")
        pos = at + 1
    out.append(text[pos:])
    return "".join(out)


def code_regions(text: str) -> list[tuple[int, int]]:
    """Character ranges of `text` (normalized) that CommonMark shows as code: fenced and
    indented blocks (whole lines, fences included) and code spans, in order."""
    starts = [0, *(m.end() for m in _NEWLINE.finditer(text))]
    lines = text.split("\n")

    def line_range(first: int, last: int) -> tuple[int, int]:
        end = starts[last] + len(lines[last]) if last < len(lines) else len(text)
        return starts[first], end

    regions: list[tuple[int, int]] = []
    for token in _md.parse(text):
        if token.map is None:
            continue
        first, end = token.map
        if token.type in ("fence", "code_block") and end > first:
            regions.append(line_range(first, end - 1))
        elif token.type == "inline" and "`" in token.content:
            regions.extend(_spans_in_source(token.content, first, lines, starts))
    regions.sort()
    merged: list[tuple[int, int]] = []
    for start, end in regions:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _spans_in_source(
    content: str, first_line: int, lines: list[str], starts: list[int]
) -> list[tuple[int, int]]:
    """The code spans of one block's inline content, as ranges of the source text. The
    content is the block's lines with their prefixes (indent, `>`, list markers) taken off;
    a line that cannot be found in its source line is left to be treated as text."""
    env: dict[str, Any] = {"src": content, "spans": []}
    _md.inline.parse(content, _md, env, [])
    if not env["spans"]:
        return []
    content_lines = content.split("\n")
    offsets: list[int | None] = []  # where each content line starts in the source
    for i, piece in enumerate(content_lines):
        number = first_line + i
        if number >= len(lines):
            offsets.append(None)
            continue
        source = lines[number]
        if source.endswith(piece):
            offsets.append(starts[number] + len(source) - len(piece))
        elif source.rstrip().endswith(piece):
            offsets.append(starts[number] + len(source.rstrip()) - len(piece))
        else:
            at = source.find(piece)
            offsets.append(None if at < 0 else starts[number] + at)
    line_starts = [0]
    for piece in content_lines[:-1]:
        line_starts.append(line_starts[-1] + len(piece) + 1)
    found: list[tuple[int, int]] = []
    for start, end in env["spans"]:
        for i in range(bisect_right(line_starts, start) - 1, len(line_starts)):
            line_start = line_starts[i]
            if line_start >= end:
                break
            line_end = line_start + len(content_lines[i])
            lo, hi = max(start, line_start), min(end, line_end)
            offset = offsets[i]
            if lo < hi and offset is not None:
                found.append((offset + lo - line_start, offset + hi - line_start))
    return found
