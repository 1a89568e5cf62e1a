"""Threaded progress replies for a run, paced to one post per channel per interval.

Notes that arrive while a channel waits for its next turn are coalesced into one post (a
newer note with the same key replaces an older one, so a long map shows only its latest
count). The answer goes last, split under Slack's message size, with a footer.
"""

from __future__ import annotations

import asyncio
import logging

from bot import messages
from bot.slack_api import SlackPoster
from rlm import CodeExecuted, Event, IterationFinished, SubcallProgress

logger = logging.getLogger("bot.progress")

# Slack accepts 40,000 characters but clients truncate long messages; stay well under.
MESSAGE_LIMIT = 3500
# Sub-call progress is worth showing only for maps at least this long.
LONG_MAP = 8


class ChannelPacer:
    """At most one post per `interval` seconds in each channel, first come first served."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._next: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def turn(self, channel: str) -> None:
        lock = self._locks.setdefault(channel, asyncio.Lock())
        async with lock:
            loop = asyncio.get_running_loop()
            wait = self._next.get(channel, 0.0) - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self._next[channel] = loop.time() + self.interval


class ProgressReporter:
    """Turns engine events into paced, coalesced replies in one thread."""

    def __init__(
        self, *, poster: SlackPoster, pacer: ChannelPacer, channel: str, thread_ts: str
    ) -> None:
        self.poster = poster
        self.pacer = pacer
        self.channel = channel
        self.thread_ts = thread_ts
        self._pending: dict[str, str] = {}
        self._flusher: asyncio.Task[None] | None = None
        self.posts = 0

    def note(self, key: str, line: str) -> None:
        """Queue a line for the next post; a later note with the same key replaces it."""
        self._pending.pop(key, None)
        self._pending[key] = line
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())

    def on_event(self, event: Event) -> None:
        if isinstance(event, IterationFinished):
            first = next((b.strip().splitlines()[0] for b in event.code_blocks if b.strip()), "")
            self._pending.pop(f"map-{event.iteration}", None)
            self.note(
                f"iteration-{event.iteration}",
                messages.iteration_done(
                    event.iteration,
                    len(event.code_blocks),
                    _clip(first, 60),
                    event.subcalls,
                    event.seconds,
                ),
            )
        elif isinstance(event, CodeExecuted) and event.error:
            self.note(f"error-{event.iteration}", messages.code_failed(event.iteration))
        elif isinstance(event, SubcallProgress) and event.total >= LONG_MAP:
            if event.done < event.total:
                self.note(
                    f"map-{event.iteration}",
                    messages.map_progress(event.iteration, event.done, event.total, event.failed),
                )

    async def _flush(self) -> None:
        while self._pending:
            await self.pacer.turn(self.channel)
            lines = list(self._pending.values())
            self._pending.clear()
            if lines and await self.poster.try_post(
                self.channel, "\n".join(lines), thread_ts=self.thread_ts
            ):
                self.posts += 1

    async def drain(self) -> None:
        """Wait until every queued note has been posted."""
        while self._flusher is not None and not self._flusher.done():
            await self._flusher

    async def say(self, text: str) -> None:
        """Post `text` now (after queued notes), in turn with the channel's other posts."""
        await self.drain()
        await self.pacer.turn(self.channel)
        if await self.poster.try_post(self.channel, text, thread_ts=self.thread_ts):
            self.posts += 1

    async def answer(self, text: str, footer: str) -> None:
        """The answer, split under the size limit, footer on the last part."""
        await self.drain()
        for part in split_message(f"{text.strip()}\n\n{footer}"):
            await self.say(part)

    def cancel(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()


def split_message(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Parts of at most `limit` characters, cut at a paragraph, line or word when possible;
    a code block cut in two is closed and reopened so both parts render."""
    parts: list[str] = []
    rest = text
    while len(rest) > limit:
        room = limit - 4  # space to close a code fence
        cut = max(rest.rfind("\n\n", 0, room), rest.rfind("\n", 0, room))
        if cut < room // 2:
            cut = rest.rfind(" ", 0, room)
        if cut < room // 2:
            cut = room
        head, rest = rest[:cut].rstrip(), rest[cut:].lstrip("\n ")
        if head.count("```") % 2 == 1:
            head += "\n```"
            rest = "```\n" + rest
        parts.append(head)
    if rest.strip():
        parts.append(rest)
    return parts


def _clip(text: str, n: int) -> str:
    text = text.replace("`", "'")
    return text if len(text) <= n else text[: n - 1] + "…"
