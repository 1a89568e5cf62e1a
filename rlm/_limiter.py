"""The concurrency gate for sub-calls.

A `Limiter` caps how many sub-calls are in flight at once. It is safe to share between runs,
tasks, event loops and threads: a slot freed on one loop is handed straight to the oldest
waiter, whatever loop that waiter is on. `KeyedLimiter` keeps one `Limiter` per key (the bot
keys by workspace), so every run under a key shares the same cap. `SlotLimiter` is all the
engine asks of a limiter, so another one (the bot's, shared across processes) can stand in.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

from rlm._exceptions import ConfigurationError


class SlotLimiter(Protocol):
    """What the engine needs of a limiter: its cap, and a slot held around each sub-call."""

    @property
    def max_in_flight(self) -> int: ...

    def slot(self) -> AbstractAsyncContextManager[None]: ...


_Waiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]


class Limiter:
    """At most `max_in_flight` holders at once; first come, first served."""

    def __init__(self, max_in_flight: int) -> None:
        if max_in_flight < 1:
            raise ConfigurationError(f"max_in_flight must be at least 1, got {max_in_flight}")
        self.max_in_flight = max_in_flight
        self._lock = threading.Lock()
        self._in_flight = 0
        self._peak = 0
        self._waiters: deque[_Waiter] = deque()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def peak(self) -> int:
        """The most holders seen at once since creation or the last `reset_peak()`."""
        return self._peak

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def reset_peak(self) -> None:
        with self._lock:
            self._peak = self._in_flight

    async def acquire(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._in_flight < self.max_in_flight and not self._waiters:
                self._take()
                return
            future: asyncio.Future[None] = loop.create_future()
            waiter = (loop, future)
            self._waiters.append(waiter)
        try:
            await future
        except asyncio.CancelledError:
            with self._lock:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                    raise
            # The slot was already handed to us; pass it on instead of losing it.
            if future.done() and not future.cancelled():
                self.release()
            raise

    def release(self) -> None:
        with self._lock:
            while self._waiters:
                loop, future = self._waiters.popleft()
                try:
                    loop.call_soon_threadsafe(self._hand_over, future)
                except RuntimeError:  # that waiter's loop is closed: try the next one
                    continue
                return
            self._in_flight -= 1

    def _hand_over(self, future: asyncio.Future[None]) -> None:
        if future.done():  # cancelled while the slot was on its way
            self.release()
        else:
            future.set_result(None)

    def _take(self) -> None:
        self._in_flight += 1
        self._peak = max(self._peak, self._in_flight)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        await self.acquire()
        try:
            yield
        finally:
            self.release()


class KeyedLimiter:
    """One `Limiter` per key, created on first use, all with the same cap."""

    def __init__(self, max_in_flight: int) -> None:
        if max_in_flight < 1:
            raise ConfigurationError(f"max_in_flight must be at least 1, got {max_in_flight}")
        self.max_in_flight = max_in_flight
        self._limiters: dict[str, Limiter] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> Limiter:
        with self._lock:
            limiter = self._limiters.get(key)
            if limiter is None:
                limiter = self._limiters[key] = Limiter(self.max_in_flight)
            return limiter

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._limiters)
