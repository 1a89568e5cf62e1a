"""Answers made for Slack: Markdown kept for the `markdown` block, mrkdwn for text fallbacks,
citations turned into links, tables made readable, and long text split under block limits.

Pure functions, no I/O: the presence (bot/presence.py) calls them and a unit test reads them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from bot.slack import markup

# Slack's `markdown` block: at most 12,000 characters across all of them in one message.
MARKDOWN_BLOCK_LIMIT = 12_000
# One answer message's Markdown, leaving room under the block limit for the fences a cut adds.
ANSWER_PART_LIMIT = 11_000
# A section or context block's text, and a message's fallback text kept short for notifications.
SECTION_LIMIT = 3000

_FENCE = re.compile(r"^\s*(```|~~~)(.*)$")
_CITATION = re.compile(r"\[((?:[mf]\d+)(?:\s*[,;]\s*[mf]\d+)*)\](?!\()")
_ONE_REF = re.compile(r"[mf]\d+")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
_BOLD = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_LINK = re.compile(r"\[([^\[\]]*(?:\[[^\[\]]*\][^\[\]]*)*)\]\((\S+?)\)")
_BULLET = re.compile(r"^(\s*)[-*+]\s+")
# Link targets mrkdwn may point at: no `|` (a second label), no Slack `!`/`@`/`#` forms.
_SAFE_URL = re.compile(r"^(?:https?://|mailto:)[^\s|<>]+$", re.IGNORECASE)
_ADDRESS_LIKE = re.compile(r"://|\bwww\.|\b[\w-]+\.[a-z]{2,}\b", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def escape_mrkdwn(text: str) -> str:
    """Model- or user-written text made inert in mrkdwn: no `<!channel>` pings, no forged
    `<url|label>` links, no mentions (Slack asks for exactly these three escapes)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def defuse_markdown(markdown: str) -> str:
    """Slack's angle-bracket syntax (`<!here>`, `<@U1>`, `<url|label>`) made literal in
    Markdown, with code found by a CommonMark parser (bot/markup.py)."""
    return markup.defuse_markdown(markdown)


def plan_sentence(reply: str, limit: int = 120) -> str:
    """The model's own words for what a step does: the first sentence of the prose before the
    reply's first code block (empty when the reply opens with code)."""
    prose = reply.split("```", 1)[0]
    prose = " ".join(line.strip() for line in prose.splitlines() if line.strip())
    prose = re.sub(r"[*_#`>]", "", prose).strip()
    if not prose:
        return ""
    sentence = _SENTENCE_END.split(prose, maxsplit=1)[0].rstrip(":").strip()
    return escape_mrkdwn(clip(sentence, limit))


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def bar(done: int, total: int, width: int = 10) -> str:
    """`▓▓▓░░ 312/500`."""
    filled = 0 if total <= 0 else min(width, round(width * done / total))
    return f"{'▓' * filled}{'░' * (width - filled)} {done:,}/{total:,}"


def link_citations(text: str, links: Mapping[str, str]) -> str:
    """`[m12]` and `[m3, f1]` become Markdown links to what they cite; unknown refs stay as
    written. Code blocks are left alone."""

    def replace(match: re.Match[str]) -> str:
        refs = _ONE_REF.findall(match.group(1))
        if not any(ref in links for ref in refs):
            return match.group(0)
        return " ".join(f"[[{ref}]]({links[ref]})" if ref in links else f"[{ref}]" for ref in refs)

    return _outside_code(text, lambda chunk: _CITATION.sub(replace, chunk))


def cited(text: str) -> list[str]:
    """The references an answer cites, in order of first appearance."""
    seen: dict[str, None] = {}
    for match in _CITATION.finditer(text):
        for ref in _ONE_REF.findall(match.group(1)):
            seen.setdefault(ref, None)
    return list(seen)


def tables_as_code(text: str) -> str:
    """Pipe tables become aligned plain text in a code block, which every client shows."""
    lines = text.split("\n")
    out: list[str] = []
    i, in_code = 0, False
    while i < len(lines):
        line = lines[i]
        if _FENCE.match(line):
            in_code = not in_code
        if (
            not in_code
            and "|" in line
            and i + 1 < len(lines)
            and _TABLE_RULE.match(lines[i + 1])
            and "|" in lines[i + 1]
        ):
            rows = [_cells(line)]
            i += 2
            while i < len(lines) and "|" in lines[i] and lines[i].strip():
                rows.append(_cells(lines[i]))
                i += 1
            out.extend(["```", *_aligned(rows), "```"])
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


def _cells(line: str) -> list[str]:
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|"):
        line = line[:-1]
    return [cell.strip().replace("**", "") for cell in line.split("|")]


def _aligned(rows: list[list[str]]) -> list[str]:
    columns = max(len(row) for row in rows)
    rows = [row + [""] * (columns - len(row)) for row in rows]
    widths = [max(len(row[c]) for row in rows) for c in range(columns)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return [line.rstrip() for line in lines]


def to_mrkdwn(markdown: str, links: Mapping[str, str] | None = None) -> str:
    """Markdown as Slack's mrkdwn, for text fallbacks and section blocks: headings and
    **bold** become *bold*, [t](u) becomes <u|t>, bullets become •, tables code blocks,
    and citations found in `links` become links."""
    markdown = escape_mrkdwn(markdown)
    if links:
        markdown = link_citations(markdown, {k: escape_mrkdwn(v) for k, v in links.items()})

    def convert(chunk: str) -> str:
        lines = []
        for line in chunk.split("\n"):
            heading = _HEADING.match(line)
            if heading:
                line = f"*{heading.group(1).strip('*_ ')}*"
            line = _BULLET.sub(lambda m: f"{m.group(1)}• ", line)
            line = _BOLD.sub(lambda m: f"*{m.group(2)}*", line)
            line = _STRIKE.sub(lambda m: f"~{m.group(1)}~", line)
            line = _LINK.sub(_mrkdwn_link, line)
            lines.append(line)
        return "\n".join(lines)

    return _outside_code(tables_as_code(markdown), convert)


def _mrkdwn_link(match: re.Match[str]) -> str:
    """`[label](url)` as mrkdwn: a link only to a web or mail address, and labelled only
    when the label does not itself look like an address (which would forge one)."""
    label, url = match.group(1), match.group(2)
    if not _SAFE_URL.match(url):
        return match.group(0)
    if _ADDRESS_LIKE.search(label):
        return f"{label} (<{url}>)"
    return f"<{url}|{label.replace('|', '¦')}>"


def for_markdown_block(markdown: str, links: Mapping[str, str]) -> str:
    """An answer as the `markdown` block shows it: citations linked, tables readable,
    Slack's own markup inert."""
    return link_citations(defuse_markdown(tables_as_code(markdown)), links)


def answer_markdown(part: str, links: Mapping[str, str]) -> str:
    """One part of an answer for its `markdown` block, under the block limit: without the
    citation links when they make it too long, and cut (never left raw) past that."""
    markdown = for_markdown_block(part, links)
    if len(markdown) > MARKDOWN_BLOCK_LIMIT:
        markdown = for_markdown_block(part, {})
    return clip(markdown, MARKDOWN_BLOCK_LIMIT)


def split_markdown(text: str, limit: int = ANSWER_PART_LIMIT) -> list[str]:
    """Parts of at most `limit` characters, cut at a paragraph, line or word when possible;
    a code block cut in two is closed and reopened (with its language) so both parts render."""
    parts, _ = split_markdown_bounded(text, limit)
    return parts


def split_markdown_bounded(
    text: str, limit: int = ANSWER_PART_LIMIT, max_parts: int | None = None
) -> tuple[list[str], str]:
    """`split_markdown` stopping after `max_parts` parts: the parts, and the rest of the text
    (empty when it all fit). Linear in the length of `text`: each cut looks back at most
    `limit` characters and nothing is copied twice."""
    if limit < 40:
        raise ValueError("limit must leave room for code fences (at least 40 characters)")
    text = text.strip()
    parts: list[str] = []
    pos, reopen = 0, ""  # where the rest starts, and the fence it reopens
    while len(reopen) + len(text) - pos > limit:
        if max_parts is not None and len(parts) >= max_parts:
            return parts, reopen + text[pos:]
        # Room to close a fence here and to reopen one in the next part.
        room = max(limit - 24 - len(reopen), limit // 4)
        end = pos + room
        cut = max(text.rfind("\n\n", pos, end), text.rfind("\n", pos, end))
        if cut - pos < room // 2:
            cut = text.rfind(" ", pos, end)
        if cut - pos < room // 2:
            cut = end
        head = reopen + text[pos:cut].rstrip()
        pos = cut
        while pos < len(text) and text[pos] in "\n ":
            pos += 1
        opener = _open_fence(head)
        reopen = ""
        if opener is not None:
            head += "\n```"
            reopen = f"```{opener}\n"
        parts.append(head)
    rest = reopen + text[pos:]
    if rest.strip():
        if max_parts is not None and len(parts) >= max_parts:
            return parts, rest
        parts.append(rest)
    return parts, ""


def _open_fence(text: str) -> str | None:
    """The info string of a code block left open at the end of `text`, or None."""
    info: str | None = None
    for line in text.split("\n"):
        fence = _FENCE.match(line)
        if fence:
            info = None if info is not None else clip(fence.group(2).strip(), 20)
    return info


def _outside_code(text: str, convert: Callable[[str], str]) -> str:
    """Apply `convert` to the parts of `text` outside fenced code blocks."""
    segments: list[tuple[bool, list[str]]] = [(False, [])]
    in_code = False
    for line in text.split("\n"):
        if _FENCE.match(line) and not in_code:
            segments.append((True, [line]))
            in_code = True
        elif _FENCE.match(line):
            segments[-1][1].append(line)
            segments.append((False, []))
            in_code = False
        else:
            segments[-1][1].append(line)
    return "\n".join(
        "\n".join(lines) if code else convert("\n".join(lines)) for code, lines in segments if lines
    )
