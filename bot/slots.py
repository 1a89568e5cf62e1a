"""Runs at once per workspace: a run beyond the cap waits its turn, in arrival order.

`RunSlots` holds the cap in this process; `SharedRunSlots` holds it in Redis for every
replica (see bot.shared_limits), and a run waits in the replica that took its question
until its workspace has room on any of them.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # redis is an optional extra: imported only when REDIS_URL is set
    from bot.shared_limits import SharedLimits


class RunSlots:
    """At most `limit` runs at once per workspace; the rest wait in arrival order."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._waiting: Counter[str] = Counter()

    @asynccontextmanager
    async def turn(
        self, team_id: str, on_wait: Callable[[int], Awaitable[None]]
    ) -> AsyncIterator[None]:
        slot = self._slots.setdefault(team_id, asyncio.Semaphore(self.limit))
        if slot.locked():
            self._waiting[team_id] += 1
            try:
                await on_wait(self.limit + self._waiting[team_id] - 1)
                await slot.acquire()
            finally:
                self._waiting[team_id] -= 1
        else:
            await slot.acquire()
        try:
            yield
        finally:
            slot.release()


class SharedRunSlots:
    """At most `limit` runs at once per workspace across every replica; the rest wait."""

    def __init__(self, limits: SharedLimits, limit: int) -> None:
        self.limits = limits
        self.limit = limit

    @asynccontextmanager
    async def turn(
        self, team_id: str, on_wait: Callable[[int], Awaitable[None]]
    ) -> AsyncIterator[None]:
        slot = self.limits.semaphore(f"runs:{team_id}", self.limit)
        token = await slot.try_acquire()
        if token is None:
            # Ahead of this one: the runs holding the cap, and those waiting here before it.
            await on_wait(self.limit + slot.waiting)
            token = await slot.acquire()
        try:
            yield
        finally:
            await asyncio.shield(slot.release(token))
