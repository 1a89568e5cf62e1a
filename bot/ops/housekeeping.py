"""The retention purge: how long stored data lives.

`Housekeeping` purges at start and then periodically: runs (with their steps and outputs)
and file text older than RLM_RETENTION_DAYS, handled event ids older than a day (Slack stops
retrying a delivery within the hour).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta

from bot.storage import Purged, Store

logger = logging.getLogger("bot.lifecycle")

EVENT_IDS_KEPT = timedelta(days=1)
PURGE_INTERVAL_SECONDS = 3600.0


class Housekeeping:
    """The periodic retention purge of one store."""

    def __init__(
        self,
        store: Store,
        *,
        retention_days: int,
        interval: float = PURGE_INTERVAL_SECONDS,
    ) -> None:
        self.store = store
        self.retention = timedelta(days=retention_days)
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    async def run_once(self, now: datetime | None = None) -> Purged:
        """Purge what is past its time as of `now` (default: this moment)."""
        now = now or datetime.now(UTC)
        purged = await self.store.purge(
            data_before=now - self.retention, events_before=now - EVENT_IDS_KEPT
        )
        if purged.runs or purged.files:
            logger.info(
                "retention: purged %d run(s) and %d file(s) older than %d days",
                purged.runs,
                purged.files,
                self.retention.days,
            )
        return purged

    def start(self) -> Housekeeping:
        self._task = asyncio.create_task(self._loop(), name="housekeeping")
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception as exc:  # a database hiccup: try again next time
                logger.warning("retention purge failed (%s); retrying later", type(exc).__name__)
            await asyncio.sleep(self.interval)
