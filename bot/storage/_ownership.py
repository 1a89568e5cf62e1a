"""Who holds a run, and every change of its status, fenced: a part of `Store` (a mixin).

A replica claims a run (queued → running) and with it a lease in the run's row, which it
renews; each claim adds one to the run's `epoch`. A status write is one conditional UPDATE
naming the run's id, the status it may come from and, when given, the owner and epoch the
writer holds: a writer that lost the run (its lease ran out and another replica marked it
interrupted) changes nothing and is told so (False). Leases are compared with the
database's clock (PostgreSQL's `now()`): replicas' clocks may disagree, the database's is
one. SQLite is one machine's file, whose clock every process shares.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import func

from bot.storage._models import Run, utc_now
from bot.storage._records import FINAL_STATUSES, RUN_STATUSES, Fence, RunRecord
from bot.storage._writes import check_choice, uncancellable

ACTIVE_STATUSES = ("queued", "running")
_NO_SUCH_RUN = "Run {run_id} does not exist."


class RunOwnership:
    _engine: AsyncEngine
    _read: async_sessionmaker[AsyncSession]

    def _writing(self) -> AbstractAsyncContextManager[AsyncSession]:
        raise NotImplementedError

    def _now(self) -> ColumnElement[datetime] | datetime:
        """The database's clock (PostgreSQL), or this machine's (SQLite: one machine)."""
        if self._engine.dialect.name == "postgresql":
            return func.now()
        return utc_now()

    def _lease_until(self, seconds: float | None) -> Any:
        if seconds is None:
            return None
        return self._now() + timedelta(seconds=seconds)

    @staticmethod
    def _fenced(fence: Fence | None) -> list[ColumnElement[bool]]:
        if fence is None:
            return []
        owner = Run.owner.is_(None) if fence.owner is None else Run.owner == fence.owner
        return [owner, Run.epoch == fence.epoch]

    async def _changed(self, session: AsyncSession, statement: Any, run_id: int) -> bool:
        result = await session.execute(statement.execution_options(synchronize_session=False))
        if result.rowcount == 1:
            return True
        if await session.get(Run, run_id) is None:
            raise LookupError(_NO_SUCH_RUN.format(run_id=run_id))
        return False

    async def database_now(self) -> datetime:
        """The database's clock (a round trip: it also says the database answers)."""
        async with self._read() as session:
            if self._engine.dialect.name == "postgresql":
                found = await session.scalar(select(func.now()))
                assert found is not None
                return found  # type: ignore[no-any-return]
            await session.execute(select(1))
            return utc_now()

    @uncancellable
    async def start_run(
        self, run_id: int, owner: str | None, lease_seconds: float | None = None
    ) -> Fence | None:
        """Claim the queued run `run_id` for `owner` (running, epoch + 1, leased for
        `lease_seconds`); None if it is no longer queued."""
        async with self._writing() as session:
            changed = await self._changed(
                session,
                update(Run)
                .where(Run.id == run_id, Run.status == "queued")
                .values(
                    status="running",
                    owner=owner,
                    epoch=Run.epoch + 1,
                    lease_expires_at=self._lease_until(lease_seconds),
                ),
                run_id,
            )
            if not changed:
                return None
            epoch = await session.scalar(select(Run.epoch).where(Run.id == run_id))
            return Fence(owner, int(epoch or 0))

    @uncancellable
    async def set_run_status(
        self,
        run_id: int,
        status: str,
        *,
        thread_ts: str | None = None,
        fence: Fence | None = None,
    ) -> bool:
        """Change a run's status (and thread, when given); a final status stamps finished_at.

        Only an unfinished run changes (a final status is kept), and with `fence` only while
        its owner and epoch are still those: False when nothing changed."""
        check_choice("status", status, RUN_STATUSES)
        values: dict[str, Any] = {"status": status}
        if thread_ts is not None:
            values["thread_ts"] = thread_ts
        if status in FINAL_STATUSES:
            values["finished_at"] = utc_now()
        async with self._writing() as session:
            return await self._changed(
                session,
                update(Run)
                .where(Run.id == run_id, Run.status.in_(ACTIVE_STATUSES), *self._fenced(fence))
                .values(**values),
                run_id,
            )

    @uncancellable
    async def set_run_thread(self, run_id: int, thread_ts: str) -> None:
        """The thread a run answers in, once its first message is posted."""
        async with self._writing() as session:
            await self._changed(
                session, update(Run).where(Run.id == run_id).values(thread_ts=thread_ts), run_id
            )

    @uncancellable
    async def finish_run(
        self,
        run_id: int,
        *,
        status: str,
        answer: str | None,
        error: str | None,
        iterations: int,
        subcalls: int,
        input_tokens: int,
        output_tokens: int,
        seconds: float,
        stopped_by: str | None = None,
        error_kind: str | None = None,
        cost_usd: float | None = None,
        cached_input_tokens: int = 0,
        fence: Fence | None = None,
    ) -> bool:
        """Store how the run ended; False (nothing written) if it had already ended, or,
        with `fence`, if the writer no longer holds it."""
        check_choice("a finished run's status", status, FINAL_STATUSES)
        async with self._writing() as session:
            return await self._changed(
                session,
                update(Run)
                .where(Run.id == run_id, Run.status.in_(ACTIVE_STATUSES), *self._fenced(fence))
                .values(
                    status=status,
                    answer=answer,
                    error=error,
                    iterations=iterations,
                    subcalls=subcalls,
                    input_tokens=input_tokens,
                    output_tokens=output_tokens,
                    seconds=seconds,
                    stopped_by=stopped_by,
                    error_kind=error_kind,
                    cost_usd=cost_usd,
                    cached_input_tokens=cached_input_tokens,
                    finished_at=utc_now(),
                    lease_expires_at=None,
                ),
                run_id,
            )

    @uncancellable
    async def renew_leases(
        self, owner: str, held: Mapping[int, int], lease_seconds: float
    ) -> set[int]:
        """Extend `owner`'s leases on the running runs `held` ({run id: epoch}); returns the
        ids still held (the others were lost: marked by another, or claimed again)."""
        if not held:
            return set()
        pairs = [and_(Run.id == run_id, Run.epoch == epoch) for run_id, epoch in held.items()]
        mine = (Run.owner == owner, Run.status == "running", or_(*pairs))
        async with self._writing() as session:
            await session.execute(
                update(Run)
                .where(*mine)
                .values(lease_expires_at=self._lease_until(lease_seconds))
                .execution_options(synchronize_session=False)
            )
            return set(await session.scalars(select(Run.id).where(*mine)))

    @uncancellable
    async def mark_expired_runs(self) -> list[RunRecord]:
        """Mark interrupted the running runs whose lease ran out by the database's clock
        (or that have none: nobody renews them); return those this call marked, each marked
        by exactly one caller however many sweep at once."""
        async with self._writing() as session:
            now = self._now()
            expired = or_(Run.lease_expires_at.is_(None), Run.lease_expires_at < now)
            found = list(
                await session.scalars(
                    select(Run).where(Run.status == "running", expired).order_by(Run.id)
                )
            )
            marked: list[RunRecord] = []
            for run in found:
                result = await session.execute(
                    update(Run)
                    .where(
                        Run.id == run.id, Run.status == "running", Run.epoch == run.epoch, expired
                    )
                    .values(status="interrupted", finished_at=utc_now(), lease_expires_at=None)
                    .execution_options(synchronize_session=False)
                )
                if result.rowcount == 1:  # type: ignore[attr-defined]
                    marked.append(RunRecord.from_row(run))
        return [dataclasses.replace(r, status="interrupted") for r in marked]
