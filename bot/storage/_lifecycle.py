"""Removing stored data: the retention purge, a channel's `/rlm forget`, and files deleted or
changed in Slack. Mixed into the Store, whose write transactions these methods use.

Runs are deleted with their iterations and context sources (explicitly, not only through the
foreign keys' ON DELETE CASCADE, so nothing depends on how a database was set up). Runs still
queued or running are never deleted: their owner would fail writing them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.storage._models import ContextSource, File, HandledEvent, Iteration, Run
from bot.storage._records import FileRecord
from bot.storage._writes import uncancellable

FINAL = ("finished", "failed", "interrupted", "stopped")
PURGE_BATCH = 500  # runs per transaction: a long purge never holds the write lock for long
_NAIVE = "{what} must be a timezone-aware datetime, such as datetime.now(UTC)."


@dataclass(frozen=True, slots=True)
class Purged:
    """How many rows a purge or a forget removed."""

    runs: int = 0
    files: int = 0
    events: int = 0


class DataLifecycle:
    _read: async_sessionmaker[AsyncSession]
    _pending: set[Any]

    def _writing(self) -> AbstractAsyncContextManager[AsyncSession]:
        raise NotImplementedError

    @uncancellable
    async def purge(self, *, data_before: datetime, events_before: datetime) -> Purged:
        """Delete finished runs (with their iterations and sources) and file text created
        before `data_before`, and handled event ids recorded before `events_before`."""
        for what, moment in (("data_before", data_before), ("events_before", events_before)):
            if moment.tzinfo is None:
                raise ValueError(_NAIVE.format(what=what))
        runs = await self._delete_runs(Run.created_at < data_before, Run.status.in_(FINAL))
        async with self._writing() as session:
            files = await _count(session, delete(File).where(File.created_at < data_before))
            events = await _count(
                session, delete(HandledEvent).where(HandledEvent.created_at < events_before)
            )
        return Purged(runs=runs, files=files, events=events)

    @uncancellable
    async def forget_channel(self, team_id: str, channel_id: str) -> Purged:
        """Delete the channel's finished runs and every file kept for it, and forget which
        of its files were handled (so a file shared again is read again)."""
        runs = await self._delete_runs(
            Run.team_id == team_id, Run.channel_id == channel_id, Run.status.in_(FINAL)
        )
        async with self._writing() as session:
            files = await _count(
                session,
                delete(File).where(File.team_id == team_id, File.channel_id == channel_id),
            )
            claims = f"file:{channel_id}:".replace("\\", "\\\\").replace("%", r"\%")
            claims = claims.replace("_", r"\_")
            await session.execute(
                delete(HandledEvent).where(HandledEvent.event_id.like(claims + "%", escape="\\"))
            )
        return Purged(runs=runs, files=files)

    async def count_active_runs(self, team_id: str, channel_id: str) -> int:
        """Runs of the channel still queued or running (a forget leaves them)."""
        query = select(func.count(Run.id)).where(
            Run.team_id == team_id, Run.channel_id == channel_id, Run.status.not_in(FINAL)
        )
        async with self._read() as session:
            return int(await session.scalar(query) or 0)

    async def file_copies(self, team_id: str, file_id: str) -> list[FileRecord]:
        """Every channel's copy of one Slack file in the workspace."""
        query = select(File).where(File.team_id == team_id, File.file_id == file_id)
        async with self._read() as session:
            return [FileRecord.from_row(r) for r in await session.scalars(query.order_by(File.id))]

    @uncancellable
    async def delete_file(self, team_id: str, file_id: str) -> int:
        """Delete every copy of the file kept in the workspace; how many there were."""
        async with self._writing() as session:
            return await _count(
                session, delete(File).where(File.team_id == team_id, File.file_id == file_id)
            )

    async def _delete_runs(self, *where: ColumnElement[bool]) -> int:
        deleted = 0
        async for ids in self._run_batches(*where):
            async with self._writing() as session:
                # Runs first, as every other writer locks them: a late iteration of one of
                # these waits for us rather than deadlocking against the children we delete.
                await session.execute(select(Run.id).where(Run.id.in_(ids)).with_for_update())
                for child in (Iteration, ContextSource):
                    await session.execute(delete(child).where(child.run_id.in_(ids)))
                deleted += await _count(session, delete(Run).where(Run.id.in_(ids)))
        return deleted

    async def _run_batches(self, *where: ColumnElement[bool]) -> AsyncIterator[list[int]]:
        last = 0
        while True:
            query = select(Run.id).where(Run.id > last, *where).order_by(Run.id)
            async with self._read() as session:
                ids = list(await session.scalars(query.limit(PURGE_BATCH)))
            if not ids:
                return
            yield ids
            last = ids[-1]


async def _count(session: AsyncSession, statement: Any) -> int:
    result = await session.execute(statement.execution_options(synchronize_session=False))
    return int(getattr(result, "rowcount", 0) or 0)
