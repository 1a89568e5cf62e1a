"""The run queue's records, which replicas share: who owns runs under way, the oldest queued
run claimed by exactly one replica, and the runs a dead replica left marked interrupted.
A part of `Store` (a mixin, as `DataLifecycle` is).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.storage._models import Run, utc_now
from bot.storage._records import RunRecord
from bot.storage._writes import uncancellable

ACTIVE_STATUSES = ("queued", "running")


class RunQueueRecords:
    _read: async_sessionmaker[AsyncSession]

    def _writing(self) -> AbstractAsyncContextManager[AsyncSession]:
        raise NotImplementedError

    async def active_run_owners(self, statuses: Iterable[str] = ACTIVE_STATUSES) -> set[str | None]:
        """The replicas owning runs in `statuses` (None: runs without an owner)."""
        query = select(Run.owner).where(Run.status.in_(tuple(statuses))).distinct()
        async with self._read() as session:
            return set(await session.scalars(query))

    def _lease_until(self, seconds: float | None) -> Any:
        raise NotImplementedError

    @uncancellable
    async def claim_queued_run(
        self, team_id: str, owner: str, lease_seconds: float | None = None
    ) -> RunRecord | None:
        """Take the workspace's oldest queued run for `owner` and mark it running (epoch + 1,
        leased for `lease_seconds`); None if none is queued. A conditional UPDATE: of
        replicas claiming at once, one gets each."""
        while True:
            async with self._writing() as session:
                run_id = await session.scalar(
                    select(Run.id)
                    # A slash command's run has no thread until its echo is posted.
                    .where(
                        Run.team_id == team_id, Run.status == "queued", Run.thread_ts.is_not(None)
                    )
                    .order_by(Run.id)
                    .limit(1)
                )
                if run_id is None:
                    return None
                result = await session.execute(
                    update(Run)
                    .where(Run.id == run_id, Run.status == "queued")
                    .values(
                        status="running",
                        owner=owner,
                        epoch=Run.epoch + 1,
                        lease_expires_at=self._lease_until(lease_seconds),
                    )
                    .execution_options(synchronize_session=False)
                )
                if result.rowcount == 1:  # type: ignore[attr-defined]
                    run = await session.get(Run, run_id, populate_existing=True)
                    assert run is not None
                    return RunRecord.from_row(run)
            # Another replica took that one between our look and our claim: the next.

    async def queued_teams(self) -> list[str]:
        """Workspaces with queued runs."""
        query = (
            select(Run.team_id).where(Run.status == "queued", Run.thread_ts.is_not(None)).distinct()
        )
        async with self._read() as session:
            return sorted(await session.scalars(query))

    async def runs_ahead(self, team_id: str, run_id: int) -> int:
        """The workspace's queued or running runs older than `run_id`."""
        query = select(func.count(Run.id)).where(
            Run.team_id == team_id, Run.status.in_(ACTIVE_STATUSES), Run.id < run_id
        )
        async with self._read() as session:
            return int(await session.scalar(query) or 0)

    @uncancellable
    async def mark_interrupted_runs(
        self,
        owners: Iterable[str | None] | None = None,
        statuses: Iterable[str] = ACTIVE_STATUSES,
    ) -> list[RunRecord]:
        """Mark runs in `statuses` (queued or running) interrupted, all of them or those of
        `owners` (None in it: runs without an owner); return the runs this call marked.

        Each run is marked by a conditional UPDATE, so when several replicas recover at
        once every run is marked, and reported, by exactly one of them.
        """
        wanted_statuses = tuple(statuses)
        query = select(Run).where(Run.status.in_(wanted_statuses)).order_by(Run.id)
        if owners is not None:
            wanted = set(owners)
            named = [o for o in wanted if o is not None]
            matches = [Run.owner.in_(named)] if named else []
            if None in wanted:
                matches.append(Run.owner.is_(None))
            if not matches:
                return []
            query = query.where(or_(*matches))
        marked: list[RunRecord] = []
        async with self._writing() as session:
            now = utc_now()
            for run in list(await session.scalars(query)):
                result = await session.execute(
                    update(Run)
                    .where(
                        Run.id == run.id,
                        Run.status.in_(wanted_statuses),
                        Run.owner.is_(None) if run.owner is None else Run.owner == run.owner,
                    )
                    .values(status="interrupted", finished_at=now)
                    .execution_options(synchronize_session=False)
                )
                if result.rowcount == 1:  # type: ignore[attr-defined]
                    marked.append(RunRecord.from_row(run))
        return [dataclasses.replace(r, status="interrupted", finished_at=now) for r in marked]
