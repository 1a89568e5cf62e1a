"""An answer cut into what a run posts: a bounded number of message parts, each rendered
for its `markdown` block and its mrkdwn fallback under Slack's limits, and the rest of a very
long answer as the text of one file. Linear in the answer's length; a large answer is
rendered in a worker thread so the event loop keeps acknowledging Slack.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

from bot.presence.render import (
    ANSWER_PART_LIMIT,
    MARKDOWN_BLOCK_LIMIT,
    answer_markdown,
    clip,
    for_markdown_block,
    split_markdown,
    split_markdown_bounded,
    to_mrkdwn,
)
from bot.slack import markup

# Messages one answer may take; whatever does not fit goes into one file in the thread.
MAX_ANSWER_PARTS = 4
# Characters past which an answer is rendered off the event loop.
LARGE_ANSWER = 100_000
# A message's fallback text: Slack refuses more than 40,000 characters.
FALLBACK_LIMIT = 30_000
# How far a part too long once rendered (many `<`, wide tables) is cut again, at most.
_RESPLITS = 3


@dataclass(frozen=True)
class RenderedPart:
    markdown: str  # for the `markdown` block, under its limit, Slack markup inert
    fallback: str  # mrkdwn for the message's `text`


@dataclass(frozen=True)
class RenderedAnswer:
    parts: list[RenderedPart]
    rest: str  # the file's text for what did not fit in `parts`; "" when all did


def render_answer(
    answer: str,
    links: Mapping[str, str],
    *,
    note: str = "",
    max_parts: int = MAX_ANSWER_PARTS,
) -> RenderedAnswer:
    """At most `max_parts` rendered parts; `note` ends the last one when there is a rest."""
    raw, rest = split_markdown_bounded(answer, ANSWER_PART_LIMIT, max_parts)
    pieces: list[str] = []
    for part in raw:
        pieces.extend(_fitting(part, links, _RESPLITS))
    if len(pieces) > max_parts:
        rest = "\n\n".join([*pieces[max_parts:], rest] if rest else pieces[max_parts:])
        pieces = pieces[:max_parts]
    parts: list[RenderedPart] = []
    for i, piece in enumerate(pieces):
        markdown = answer_markdown(piece, links)
        if rest and note and i == len(pieces) - 1:
            markdown = clip(markdown, MARKDOWN_BLOCK_LIMIT - len(note) - 2) + "\n\n" + note
        parts.append(RenderedPart(markdown, clip(to_mrkdwn(piece, links), FALLBACK_LIMIT)))
    return RenderedAnswer(parts, markup.defuse_code(markup.normalize(rest)))


async def render_answer_async(
    answer: str, links: Mapping[str, str], *, note: str = "", max_parts: int = MAX_ANSWER_PARTS
) -> RenderedAnswer:
    """`render_answer`, in a worker thread when the answer is large."""
    if len(answer) <= LARGE_ANSWER:
        return render_answer(answer, links, note=note, max_parts=max_parts)
    return await asyncio.to_thread(render_answer, answer, links, note=note, max_parts=max_parts)


def _fitting(part: str, links: Mapping[str, str], depth: int) -> list[str]:
    """`part`, or it cut smaller when its rendered Markdown would pass the block limit."""
    size = len(answer_markdown_unclipped(part, links))
    if size <= MARKDOWN_BLOCK_LIMIT or depth == 0 or len(part) < 400:
        return [part]
    limit = max(200, len(part) * MARKDOWN_BLOCK_LIMIT * 9 // (size * 10))
    return [
        piece for cut in split_markdown(part, limit) for piece in _fitting(cut, links, depth - 1)
    ]


def answer_markdown_unclipped(part: str, links: Mapping[str, str]) -> str:
    """The part's block Markdown before any cut (links dropped when they make it too long)."""
    markdown = for_markdown_block(part, links)
    if len(markdown) > MARKDOWN_BLOCK_LIMIT and links:
        markdown = for_markdown_block(part, {})
    return markdown
