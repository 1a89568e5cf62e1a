"""Files kept as text for their channel (and thread): saved, replaced, listed oldest first.
A part of `Store` (a mixin, as `DataLifecycle` is).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.storage._models import File
from bot.storage._records import FileRecord
from bot.storage._writes import ensure_workspace_row, uncancellable, upsert


class FileRecords:
    _read: async_sessionmaker[AsyncSession]

    def _writing(self) -> AbstractAsyncContextManager[AsyncSession]:
        raise NotImplementedError

    @uncancellable
    async def save_file(
        self,
        *,
        team_id: str,
        channel_id: str,
        file_id: str,
        name: str,
        mimetype: str | None,
        size: int,
        text: str,
        thread_ts: str | None,
        user_id: str | None,
        changed: str | None = None,
    ) -> None:
        """Keep a file's text for its channel; saving the same file again replaces it."""
        values = {
            "changed": changed,
            "team_id": team_id,
            "thread_ts": thread_ts,
            "name": name,
            "mimetype": mimetype,
            "size": size,
            "text": text,
            "user_id": user_id,
        }
        async with self._writing() as session:
            await ensure_workspace_row(session, team_id, None)
            await upsert(session, File, {"channel_id": channel_id, "file_id": file_id}, values)

    async def channel_files(self, team_id: str, channel_id: str) -> list[FileRecord]:
        """Every file kept for the channel, in threads or not, oldest first."""
        query = select(File).where(File.team_id == team_id, File.channel_id == channel_id)
        return await self._files(query)

    async def thread_files(self, team_id: str, channel_id: str, thread_ts: str) -> list[FileRecord]:
        query = select(File).where(
            File.team_id == team_id, File.channel_id == channel_id, File.thread_ts == thread_ts
        )
        return await self._files(query)

    async def _files(self, query: Any) -> list[FileRecord]:
        async with self._read() as session:
            rows = await session.scalars(query.order_by(File.created_at, File.id))
            return [FileRecord.from_row(row) for row in rows]
