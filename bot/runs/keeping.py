"""Keeping a run's record true through trouble: the runs this process holds (the owner and
epoch each claim gave, and their leases in the database, renewed), writes retried through a
database outage for at most `retry_seconds`, and a small outbox for a run's final write that
outlasts even that, written once the database answers again.

A run's end is stored before it is shown: the answer is posted only once its run is stored
as finished (or its final write waits in the outbox, to land as soon as it can), and a
writer that lost the run (another replica marked it interrupted) posts nothing.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    InterfaceError,
    OperationalError,
)

from bot.storage import Fence, Store

logger = logging.getLogger("bot.runs")

T = TypeVar("T")

FIRST_RETRY_SECONDS = 0.2
MOST_RETRY_SECONDS = 2.0
OUTBOX_SECONDS = 1.0  # how often the outbox tries again


def database_away(exc: BaseException) -> bool:
    """Whether `exc` says the database cannot be reached or written now (refused, cut, full
    disk), rather than that a write was wrong."""
    if isinstance(exc, IntegrityError):
        return False
    if isinstance(exc, OperationalError | InterfaceError | DisconnectionError | OSError):
        return True
    if isinstance(exc, TimeoutError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


class OutageLog:
    """An outage of something this process depends on, said once when it starts and once
    when it ends (not once per failed attempt)."""

    def __init__(self, what: str, log: logging.Logger = logger) -> None:
        self.what = what
        self.log = log
        self.down_since: float | None = None

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def failed(self, exc: BaseException) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            self.log.warning("%s cannot be reached: %s", self.what, _short(exc))

    def ok(self) -> None:
        if self.down_since is not None:
            lasted = time.monotonic() - self.down_since
            self.down_since = None
            self.log.warning("%s answers again (after %.1f s)", self.what, lasted)


class Written(enum.Enum):
    STORED = "stored"
    DEFERRED = "deferred"  # in the outbox: written when the database answers again
    LOST = "lost"  # the run is no longer this writer's (or had already ended)

    @property
    def shown(self) -> bool:
        """Whether the end may be shown in Slack."""
        return self is not Written.LOST


class RunKeeper:
    """One per process, shared by the runners of every workspace."""

    def __init__(
        self,
        store: Store,
        *,
        owner: str | None = None,
        lease_seconds: float | None = None,
        retry_seconds: float = 60.0,
    ) -> None:
        self.store = store
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.retry_seconds = retry_seconds
        self.fences: dict[int, Fence] = {}
        self.database = OutageLog("the database")
        self._outbox: dict[int, dict[str, Any]] = {}
        self._flusher: asyncio.Task[None] | None = None

    # -- the runs held ----------------------------------------------------------------------

    def hold(self, run_id: int, fence: Fence) -> None:
        self.fences[run_id] = fence

    def release(self, run_id: int) -> None:
        """The run's work is over here; its lease is kept while its end waits in the outbox."""
        if run_id not in self._outbox:
            self.fences.pop(run_id, None)

    async def renew(self) -> set[int]:
        """Renew the leases of the runs held; returns those lost (marked by another)."""
        held = {run_id: f.epoch for run_id, f in self.fences.items() if f.owner == self.owner}
        if self.owner is None or self.lease_seconds is None or not held:
            await self.store.database_now()  # still a round trip: the caller learns it answers
            return set()
        kept = await self.store.renew_leases(self.owner, held, self.lease_seconds)
        lost = set(held) - kept
        for run_id in lost:
            self.fences.pop(run_id, None)
            self._outbox.pop(run_id, None)
        return lost

    # -- writes that wait out an outage -----------------------------------------------------

    async def retrying(self, write: Callable[[], Awaitable[T]]) -> T:
        """`write()`, tried again while the database is away, for at most `retry_seconds`;
        the last error when that runs out."""
        deadline = time.monotonic() + self.retry_seconds
        delay = FIRST_RETRY_SECONDS
        while True:
            try:
                result = await write()
            except Exception as exc:
                if not database_away(exc):
                    raise
                self.database.failed(exc)
                if time.monotonic() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, MOST_RETRY_SECONDS)
                continue
            self.database.ok()
            return result

    async def finish(self, run_id: int, **values: Any) -> Written:
        """Store how run `run_id` ended (Store.finish_run's `values`), fenced by its claim."""
        fence = self.fences.get(run_id)
        try:
            stored = await self.retrying(
                lambda: self.store.finish_run(run_id, fence=fence, **values)
            )
        except Exception as exc:
            if not database_away(exc):
                raise
            self._outbox[run_id] = values
            logger.warning("run %d: its end waits to be stored until the database answers", run_id)
            if self._flusher is None or self._flusher.done():
                self._flusher = asyncio.create_task(self._flush(), name="run outbox")
            return Written.DEFERRED
        if not stored:
            logger.warning("run %d: no longer this process's (or already ended): not shown", run_id)
            return Written.LOST
        return Written.STORED

    async def set_status(self, run_id: int, status: str) -> bool:
        """Change the run's status, fenced by its claim, retrying through an outage."""
        fence = self.fences.get(run_id)
        return await self.retrying(lambda: self.store.set_run_status(run_id, status, fence=fence))

    @property
    def waiting(self) -> int:
        """Final writes waiting in the outbox."""
        return len(self._outbox)

    async def _flush(self) -> None:
        while self._outbox:
            await asyncio.sleep(OUTBOX_SECONDS)
            await self.flush()

    async def flush(self) -> None:
        """Write what waits in the outbox, as far as the database lets us now."""
        for run_id, values in list(self._outbox.items()):
            fence = self.fences.get(run_id)
            try:
                stored = await self.store.finish_run(run_id, fence=fence, **values)
            except Exception as exc:
                if not database_away(exc):
                    logger.exception("run %d: its end could not be stored", run_id)
                    self._outbox.pop(run_id, None)
                    continue
                self.database.failed(exc)
                return
            self.database.ok()
            self._outbox.pop(run_id, None)
            self.fences.pop(run_id, None)
            if stored:
                logger.info("run %d: its end, kept meanwhile, is stored", run_id)
            else:
                logger.warning("run %d: its end, kept meanwhile, came too late", run_id)

    async def close(self, grace: float = 5.0) -> None:
        """At shutdown: one last try at what waits in the outbox."""
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        if self._outbox:
            try:
                async with asyncio.timeout(grace):
                    await self.flush()
            except TimeoutError:
                pass
            if self._outbox:
                logger.error("%d run end(s) could not be stored before exit", len(self._outbox))


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
