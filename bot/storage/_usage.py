"""What a workspace has used: tokens and dollars since a moment, runs counted by status, for budgets
and `/rlm usage`. A part of `Store` (a mixin, as `DataLifecycle` is).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.storage._models import Run
from bot.storage._records import RUN_STATUSES
from bot.storage._writes import check_choice

_NAIVE_SINCE = "`since` must be a timezone-aware datetime, such as datetime.now(UTC)."


class UsageRecords:
    _read: async_sessionmaker[AsyncSession]

    async def tokens_used_since(self, team_id: str, since: datetime) -> int:
        """Input plus output tokens of the workspace's runs created at or after `since`."""
        if since.tzinfo is None:
            raise ValueError(_NAIVE_SINCE)
        query = select(func.coalesce(func.sum(Run.input_tokens + Run.output_tokens), 0)).where(
            Run.team_id == team_id, Run.created_at >= since
        )
        async with self._read() as session:
            return int(await session.scalar(query) or 0)

    async def cost_used_since(self, team_id: str, since: datetime) -> float:
        """US dollars of the workspace's runs created at or after `since` (priced runs only:
        a run over a model without a price has no cost to add)."""
        if since.tzinfo is None:
            raise ValueError(_NAIVE_SINCE)
        query = select(func.coalesce(func.sum(Run.cost_usd), 0.0)).where(
            Run.team_id == team_id, Run.created_at >= since
        )
        async with self._read() as session:
            return float(await session.scalar(query) or 0.0)

    async def count_runs(
        self,
        team_id: str,
        *,
        since: datetime | None = None,
        statuses: Iterable[str] | None = None,
    ) -> int:
        """How many of the workspace's runs were created at or after `since`, in `statuses`."""
        query = select(func.count(Run.id)).where(Run.team_id == team_id)
        if since is not None:
            if since.tzinfo is None:
                raise ValueError(_NAIVE_SINCE)
            query = query.where(Run.created_at >= since)
        if statuses is not None:
            wanted = tuple(statuses)
            for status in wanted:
                check_choice("status", status, RUN_STATUSES)
            query = query.where(Run.status.in_(wanted))
        async with self._read() as session:
            return int(await session.scalar(query) or 0)
