"""The Store: every read and write the bot makes to its database, each in its own transaction.

Each write commits before the method returns, so what one coroutine or process records is
visible to the others at once, and nothing is lost if the process dies a moment later.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from types import TracebackType
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.storage._engine import for_writes
from bot.storage._files import FileRecords
from bot.storage._lifecycle import DataLifecycle
from bot.storage._models import (
    ContextSource,
    HandledEvent,
    Iteration,
    Run,
    RunFeedback,
    Workspace,
    utc_now,
)
from bot.storage._operator import open_migrated
from bot.storage._ownership import RunOwnership
from bot.storage._queue import RunQueueRecords
from bot.storage._records import (
    CONTEXT_KINDS,
    FEEDBACK_VALUES,
    FINAL_STATUSES,
    RUN_STATUSES,
    SCOPES,
    TRIGGERS,
    IterationRecord,
    RunRecord,
)
from bot.storage._usage import UsageRecords
from bot.storage._writes import check_choice as _check_choice
from bot.storage._writes import uncancellable as _uncancellable
from bot.storage._writes import upsert as _upsert

_NO_SUCH_RUN = "Run {run_id} does not exist."
_EMPTY_EVENT_ID = "An event id must not be empty."


class Store(DataLifecycle, RunOwnership, RunQueueRecords, FileRecords, UsageRecords):
    """The bot's database. Make one with `await Store.open(url)` and `await store.close()` it."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._read = async_sessionmaker(engine, expire_on_commit=False)
        self._write = async_sessionmaker(for_writes(engine), expire_on_commit=False)
        # SQLite has one writer at a time: queueing our own writers here is much faster than
        # letting them poll for the file lock. Other processes still wait on busy_timeout.
        self._write_turn: AbstractAsyncContextManager[Any] = (
            asyncio.Lock() if engine.dialect.name == "sqlite" else nullcontext()
        )
        self._pending: set[asyncio.Future[Any]] = set()

    @classmethod
    async def open(cls, database_url: str) -> Store:
        """Migrate the database at `database_url` to the newest schema, then open it."""
        engine, _ = await open_migrated(database_url)
        return cls(engine)

    async def close(self) -> None:
        while self._pending:  # writes whose callers were cancelled still finish first
            await asyncio.gather(*list(self._pending), return_exceptions=True)
        await self._engine.dispose()

    async def ping(self) -> None:
        """One round trip to the database (SELECT 1); raises what the driver raises."""
        async with self._engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    @asynccontextmanager
    async def _writing(self) -> AsyncIterator[AsyncSession]:
        """A session in a write transaction, committed when the block ends without error."""
        async with self._write_turn, self._write.begin() as session:
            yield session

    # Slack events

    @_uncancellable
    async def claim_event(self, event_id: str) -> bool:
        """True the first time `event_id` is claimed (by any coroutine or process), else False."""
        if not event_id:
            raise ValueError(_EMPTY_EVENT_ID)
        try:
            async with self._writing() as session:
                session.add(HandledEvent(event_id=event_id))
        except IntegrityError:
            return False
        return True

    # Workspaces

    @_uncancellable
    async def ensure_workspace(self, team_id: str, name: str | None = None) -> None:
        async with self._writing() as session:
            await self._ensure_workspace(session, team_id, name)

    # Runs

    @_uncancellable
    async def create_run(
        self,
        *,
        team_id: str,
        channel_id: str,
        thread_ts: str | None,
        user_id: str,
        question: str,
        root_model: str,
        sub_model: str,
        trigger: str,
        status: str = "queued",
        scope: str | None = None,
        scope_ts: str | None = None,
        owner: str | None = None,
        exclude_ts: str | None = None,
    ) -> int:
        _check_choice("trigger", trigger, TRIGGERS)
        _check_choice("status", status, RUN_STATUSES)
        if scope is not None:
            _check_choice("scope", scope, SCOPES)
        async with self._writing() as session:
            await self._ensure_workspace(session, team_id, None)
            run = Run(
                team_id=team_id,
                channel_id=channel_id,
                thread_ts=thread_ts,
                user_id=user_id,
                question=question,
                status=status,
                root_model=root_model,
                sub_model=sub_model,
                trigger=trigger,
                scope=scope,
                scope_ts=scope_ts,
                finished_at=utc_now() if status in FINAL_STATUSES else None,
                owner=owner,
                exclude_ts=exclude_ts,
            )
            session.add(run)
            await session.flush()
            return run.id

    @_uncancellable
    async def set_status_message(self, run_id: int, ts: str) -> None:
        """Remember the ts of the run's status message (its one live message in Slack)."""
        async with self._writing() as session:
            run = await self._get_run(session, run_id)
            run.status_ts = ts

    @_uncancellable
    async def add_context_source(
        self, run_id: int, *, kind: str, ref: str, items: int, chars: int
    ) -> None:
        _check_choice("kind", kind, CONTEXT_KINDS)
        async with self._writing() as session:
            await self._get_run(session, run_id)
            session.add(ContextSource(run_id=run_id, kind=kind, ref=ref, items=items, chars=chars))

    @_uncancellable
    async def record_iteration(
        self,
        run_id: int,
        *,
        iteration: int,
        root_reply: str,
        code: str,
        output: str,
        subcalls: int,
        input_tokens: int,
        output_tokens: int,
        seconds: float,
        cost_usd: float | None = None,
    ) -> None:
        """Store one iteration (replacing an earlier record of the same number), committed now.

        While the run is unfinished its totals follow its iterations, so a run cut short by a
        crash still shows (and budgets still count) what it had used.
        """
        values = {
            "root_reply": root_reply,
            "code": code,
            "output": output,
            "subcalls": subcalls,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "seconds": seconds,
            "cost_usd": cost_usd,
        }
        async with self._writing() as session:
            # The run's row stays locked until commit: a concurrent iteration or finish_run
            # waits, then sees this one's work (no lost update of the totals).
            run = await self._get_run(session, run_id, lock=True)
            await _upsert(session, Iteration, {"run_id": run_id, "iteration": iteration}, values)
            if run.finished_at is None:
                await session.flush()
                totals = (
                    await session.execute(
                        select(
                            func.count(),
                            func.coalesce(func.sum(Iteration.subcalls), 0),
                            func.coalesce(func.sum(Iteration.input_tokens), 0),
                            func.coalesce(func.sum(Iteration.output_tokens), 0),
                            func.coalesce(func.sum(Iteration.seconds), 0.0),
                            func.sum(Iteration.cost_usd),
                        ).where(Iteration.run_id == run_id)
                    )
                ).one()
                (
                    run.iterations,
                    run.subcalls,
                    run.input_tokens,
                    run.output_tokens,
                    run.seconds,
                    run.cost_usd,
                ) = totals

    async def get_run(self, run_id: int) -> RunRecord | None:
        async with self._read() as session:
            run = await session.get(Run, run_id)
            return RunRecord.from_row(run) if run is not None else None

    async def list_runs(
        self, *, team_id: str | None = None, status: str | None = None
    ) -> list[RunRecord]:
        """Runs matching the filters, oldest first."""
        query = select(Run).order_by(Run.id)
        if team_id is not None:
            query = query.where(Run.team_id == team_id)
        if status is not None:
            _check_choice("status", status, RUN_STATUSES)
            query = query.where(Run.status == status)
        async with self._read() as session:
            return [RunRecord.from_row(run) for run in await session.scalars(query)]

    async def thread_runs(self, team_id: str, channel_id: str, thread_ts: str) -> list[RunRecord]:
        """The runs answered in one thread, oldest first (a follow-up reads their Q&A)."""
        query = (
            select(Run)
            .where(
                Run.team_id == team_id,
                Run.channel_id == channel_id,
                Run.thread_ts == thread_ts,
            )
            .order_by(Run.id)
        )
        async with self._read() as session:
            return [RunRecord.from_row(run) for run in await session.scalars(query)]

    async def operator_problems(self, team_id: str, *, limit: int = 20) -> list[RunRecord]:
        """Recent failed runs only an operator can fix (error_kind "operator:..."), newest first."""
        query = (
            select(Run)
            .where(Run.team_id == team_id, Run.error_kind.like("operator:%"))
            .order_by(Run.id.desc())
            .limit(limit)
        )
        async with self._read() as session:
            return [RunRecord.from_row(run) for run in await session.scalars(query)]

    @_uncancellable
    async def set_feedback(self, run_id: int, user_id: str, value: str) -> None:
        """One user's 👍 ("up") or 👎 ("down") on a run; a later click replaces it."""
        _check_choice("feedback", value, FEEDBACK_VALUES)
        async with self._writing() as session:
            await self._get_run(session, run_id)
            await _upsert(
                session,
                RunFeedback,
                {"run_id": run_id, "user_id": user_id},
                {"value": value, "created_at": utc_now()},
            )

    async def feedback(self, run_id: int) -> dict[str, str]:
        """Each user's feedback on the run: {user_id: "up" | "down"}."""
        query = select(RunFeedback).where(RunFeedback.run_id == run_id)
        async with self._read() as session:
            return {row.user_id: row.value for row in await session.scalars(query)}

    async def read_counts(self, run_id: int) -> dict[str, tuple[int, int]]:
        """What the run read, by kind of source: {kind: (sources, items)}."""
        query = (
            select(ContextSource.kind, func.count(), func.sum(ContextSource.items))
            .where(ContextSource.run_id == run_id)
            .group_by(ContextSource.kind)
        )
        async with self._read() as session:
            rows = (await session.execute(query)).all()
        return {str(kind): (int(n), int(items or 0)) for kind, n, items in rows}

    async def list_iterations(self, run_id: int) -> list[IterationRecord]:
        query = select(Iteration).where(Iteration.run_id == run_id).order_by(Iteration.iteration)
        async with self._read() as session:
            return [IterationRecord.from_row(row) for row in await session.scalars(query)]

    # Helpers

    @staticmethod
    async def _get_run(session: AsyncSession, run_id: int, *, lock: bool = False) -> Run:
        """The run's row; with `lock`, locked for this transaction (PostgreSQL: FOR NO KEY
        UPDATE, which still lets iterations referencing it be inserted; SQLite's write
        transaction already excludes other writers)."""
        run = await session.get(Run, run_id, with_for_update={"key_share": True} if lock else None)
        if run is None:
            raise LookupError(_NO_SUCH_RUN.format(run_id=run_id))
        return run

    @staticmethod
    async def _ensure_workspace(session: AsyncSession, team_id: str, name: str | None) -> None:
        values = {"name": name} if name is not None else {}
        await _upsert(session, Workspace, {"team_id": team_id}, values)
