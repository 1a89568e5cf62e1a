"""Pacing: at most one post per key (a channel, or a workspace's status edits) per interval.

A run's status and answer (bot/presence/run.py) take their turn here, so many runs in one channel
do not flood it, and status edits stay within chat.update's rate tier per workspace.
"""

from __future__ import annotations

import asyncio


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
