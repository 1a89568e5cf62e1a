"""The Store's queries for Slack's surfaces: App Home, `/rlm history`, the assistant pane.

Recent runs by channel or by asker, the channel each assistant pane thread is viewing, and
the configuration problems shown to admins. `problems_for_workspace` is the one interface
App Home reads; anything that meets an operator-fixable error feeds it with `record_problem`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from bot.storage._models import AssistantThread, Problem, Run, utc_now
from bot.storage._records import RunRecord
from bot.storage._store import Store as _BaseStore
from bot.storage._writes import uncancellable as _uncancellable
from bot.storage._writes import upsert as _upsert

MAX_LISTED = 50
_BAD_LIMIT = "`limit` must be between 1 and {most}; got {limit}."


@dataclass(frozen=True, slots=True)
class PaneContext:
    """The channel an assistant pane thread's user has open (None: none, or not a channel)."""

    team_id: str
    user_id: str | None
    viewed_channel_id: str | None
    viewed_team_id: str | None


@dataclass(frozen=True, slots=True)
class ProblemRecord:
    kind: str
    detail: str
    fix: str
    count: int
    first_seen: datetime
    last_seen: datetime


class Store(_BaseStore):
    """The bot's database, with the queries the surfaces need (see bot.storage._store)."""

    async def recent_runs(
        self,
        team_id: str,
        *,
        channel_id: str | None = None,
        user_id: str | None = None,
        limit: int = 10,
    ) -> list[RunRecord]:
        """The workspace's newest runs, filtered by where they were asked and who asked."""
        if not 1 <= limit <= MAX_LISTED:
            raise ValueError(_BAD_LIMIT.format(most=MAX_LISTED, limit=limit))
        query = select(Run).where(Run.team_id == team_id)
        if channel_id is not None:
            query = query.where(Run.channel_id == channel_id)
        if user_id is not None:
            query = query.where(Run.user_id == user_id)
        query = query.order_by(Run.id.desc()).limit(limit)
        async with self._read() as session:
            return [RunRecord.from_row(run) for run in await session.scalars(query)]

    # The assistant pane

    @_uncancellable
    async def save_pane_context(
        self,
        *,
        channel_id: str,
        thread_ts: str,
        team_id: str,
        user_id: str | None,
        viewed_channel_id: str | None,
        viewed_team_id: str | None,
    ) -> None:
        values = {
            "team_id": team_id,
            "user_id": user_id,
            "viewed_channel_id": viewed_channel_id,
            "viewed_team_id": viewed_team_id,
            "updated_at": utc_now(),
        }
        async with self._writing() as session:
            key = {"channel_id": channel_id, "thread_ts": thread_ts}
            await _upsert(session, AssistantThread, key, values)

    async def pane_context(self, channel_id: str, thread_ts: str) -> PaneContext | None:
        async with self._read() as session:
            row = await session.get(AssistantThread, (channel_id, thread_ts))
            if row is None:
                return None
            return PaneContext(
                team_id=row.team_id,
                user_id=row.user_id,
                viewed_channel_id=row.viewed_channel_id,
                viewed_team_id=row.viewed_team_id,
            )

    # Configuration problems

    @_uncancellable
    async def record_problem(self, team_id: str, *, kind: str, detail: str, fix: str) -> None:
        """Note an operator-fixable problem; the same kind again updates it and counts it."""
        async with self._writing() as session:
            row = await session.scalar(
                select(Problem).where(Problem.team_id == team_id, Problem.kind == kind)
            )
            if row is not None:
                row.detail, row.fix, row.last_seen = detail, fix, utc_now()
                row.count += 1
                return
            values = {"detail": detail, "fix": fix, "count": 1}
            await _upsert(session, Problem, {"team_id": team_id, "kind": kind}, values)

    async def problems_for_workspace(self, team_id: str, *, limit: int = 10) -> list[ProblemRecord]:
        """The workspace's configuration problems, most recently seen first."""
        query = (
            select(Problem)
            .where(Problem.team_id == team_id)
            .order_by(Problem.last_seen.desc(), Problem.id.desc())
            .limit(limit)
        )
        async with self._read() as session:
            return [
                ProblemRecord(
                    kind=row.kind,
                    detail=row.detail,
                    fix=row.fix,
                    count=row.count,
                    first_seen=row.first_seen,
                    last_seen=row.last_seen,
                )
                for row in await session.scalars(query)
            ]

    @_uncancellable
    async def clear_problem(self, team_id: str, kind: str) -> None:
        async with self._writing() as session:
            row = await session.scalar(
                select(Problem).where(Problem.team_id == team_id, Problem.kind == kind)
            )
            if row is not None:
                await session.delete(row)
