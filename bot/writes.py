"""Database writes that a cancellation cannot cut short.

A Store write cancelled mid-transaction can leave SQLite's write lock held, so the next write
waits out the whole busy timeout and fails. Runs and file uploads are cancelled at shutdown,
so their writes go through `ShieldedWrites`: a cancelled caller stops waiting, the write still
finishes, and `wait()` lets shutdown see every one through before the store is closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")


class ShieldedWrites:
    def __init__(self) -> None:
        self._pending: set[asyncio.Task[Any]] = set()

    async def __call__(self, write: Awaitable[T]) -> T:
        task = asyncio.ensure_future(write)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return await asyncio.shield(task)

    async def wait(self) -> None:
        """Wait for every write still in flight (at shutdown)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
