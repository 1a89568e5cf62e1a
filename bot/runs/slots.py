"""Runs at once per workspace: a run beyond the cap waits its turn, in arrival order.

This is the cap of one process; replicas share theirs through bot.runs.queue.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from bot.telemetry.metrics import RUNS_QUEUED


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
            RUNS_QUEUED.labels(team_id).inc()
            try:
                await on_wait(self.limit + self._waiting[team_id] - 1)
                await slot.acquire()
            finally:
                self._waiting[team_id] -= 1
                RUNS_QUEUED.labels(team_id).dec()
        else:
            await slot.acquire()
        try:
            yield
        finally:
            slot.release()
