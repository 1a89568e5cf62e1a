"""The Store: every read and write the bot makes to its database, each in its own transaction.

Each write commits before the method returns, so what one coroutine or process records is
visible to the others at once, and nothing is lost if the process dies a moment later.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.storage._engine import for_writes
from bot.storage._lifecycle import DataLifecycle
from bot.storage._models import (
    Base,
    ContextSource,
    File,
    HandledEvent,
    Iteration,
    Run,
    RunFeedback,
    Workspace,
    utc_now,
)
from bot.storage._operator import open_migrated
from bot.storage._records import FileRecord, IterationRecord, RunRecord
from bot.storage._writes import check_choice as _check_choice
from bot.storage._writes import uncancellable as _uncancellable

RUN_STATUSES = ("queued", "running", "finished", "failed", "interrupted", "stopped")
ACTIVE_STATUSES = ("queued", "running")
FINAL_STATUSES = ("finished", "failed", "interrupted", "stopped")
TRIGGERS = ("command", "mention", "assistant", "dm")
CONTEXT_KINDS = ("channel_history", "thread", "file", "earlier_answers")
SCOPES = ("channel", "thread")
FEEDBACK_VALUES = ("up", "down")

_NO_SUCH_RUN = "Run {run_id} does not exist."
_EMPTY_EVENT_ID = "An event id must not be empty."
_NAIVE_SINCE = "`since` must be a timezone-aware datetime, such as datetime.now(UTC)."

ModelT = TypeVar("ModelT", bound=Base)


class Store(DataLifecycle):
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
    async def set_run_status(
        self, run_id: int, status: str, *, thread_ts: str | None = None
    ) -> None:
        """Change a run's status (and thread, when given); a final status stamps finished_at."""
        _check_choice("status", status, RUN_STATUSES)
        async with self._writing() as session:
            run = await self._get_run(session, run_id, lock=True)
            run.status = status
            if thread_ts is not None:
                run.thread_ts = thread_ts
            if status in FINAL_STATUSES and run.finished_at is None:
                run.finished_at = utc_now()

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
                        ).where(Iteration.run_id == run_id)
                    )
                ).one()
                (
                    run.iterations,
                    run.subcalls,
                    run.input_tokens,
                    run.output_tokens,
                    run.seconds,
                ) = totals

    @_uncancellable
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
    ) -> None:
        _check_choice("a finished run's status", status, FINAL_STATUSES)
        async with self._writing() as session:
            run = await self._get_run(session, run_id, lock=True)
            run.status = status
            run.answer = answer
            run.error = error
            run.iterations = iterations
            run.subcalls = subcalls
            run.input_tokens = input_tokens
            run.output_tokens = output_tokens
            run.seconds = seconds
            run.stopped_by = stopped_by
            run.error_kind = error_kind
            run.finished_at = utc_now()

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

    async def list_iterations(self, run_id: int) -> list[IterationRecord]:
        query = select(Iteration).where(Iteration.run_id == run_id).order_by(Iteration.iteration)
        async with self._read() as session:
            return [IterationRecord.from_row(row) for row in await session.scalars(query)]

    async def active_run_owners(self, statuses: Iterable[str] = ACTIVE_STATUSES) -> set[str | None]:
        """The replicas owning runs in `statuses` (None: runs without an owner)."""
        query = select(Run.owner).where(Run.status.in_(tuple(statuses))).distinct()
        async with self._read() as session:
            return set(await session.scalars(query))

    @_uncancellable
    async def claim_queued_run(self, team_id: str, owner: str) -> RunRecord | None:
        """Take the workspace's oldest queued run for `owner` and mark it running; None if
        none is queued. A conditional UPDATE: of replicas claiming at once, one gets each."""
        while True:
            async with self._writing() as session:
                run_id = await session.scalar(
                    select(Run.id)
                    .where(Run.team_id == team_id, Run.status == "queued")
                    .order_by(Run.id)
                    .limit(1)
                )
                if run_id is None:
                    return None
                result = await session.execute(
                    update(Run)
                    .where(Run.id == run_id, Run.status == "queued")
                    .values(status="running", owner=owner)
                    .execution_options(synchronize_session=False)
                )
                if result.rowcount == 1:  # type: ignore[attr-defined]
                    run = await session.get(Run, run_id, populate_existing=True)
                    assert run is not None
                    return RunRecord.from_row(run)
            # Another replica took that one between our look and our claim: the next.

    async def queued_teams(self) -> list[str]:
        """Workspaces with queued runs."""
        query = select(Run.team_id).where(Run.status == "queued").distinct()
        async with self._read() as session:
            return sorted(await session.scalars(query))

    async def runs_ahead(self, team_id: str, run_id: int) -> int:
        """The workspace's queued or running runs older than `run_id`."""
        query = select(func.count(Run.id)).where(
            Run.team_id == team_id, Run.status.in_(ACTIVE_STATUSES), Run.id < run_id
        )
        async with self._read() as session:
            return int(await session.scalar(query) or 0)

    @_uncancellable
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

    # Files

    @_uncancellable
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
            await self._ensure_workspace(session, team_id, None)
            await _upsert(session, File, {"channel_id": channel_id, "file_id": file_id}, values)

    async def channel_files(self, team_id: str, channel_id: str) -> list[FileRecord]:
        """Every file kept for the channel, in threads or not, oldest first."""
        query = select(File).where(File.team_id == team_id, File.channel_id == channel_id)
        return await self._files(query)

    async def thread_files(self, team_id: str, channel_id: str, thread_ts: str) -> list[FileRecord]:
        query = select(File).where(
            File.team_id == team_id, File.channel_id == channel_id, File.thread_ts == thread_ts
        )
        return await self._files(query)

    # Budgets

    async def tokens_used_since(self, team_id: str, since: datetime) -> int:
        """Input plus output tokens of the workspace's runs created at or after `since`."""
        if since.tzinfo is None:
            raise ValueError(_NAIVE_SINCE)
        query = select(func.coalesce(func.sum(Run.input_tokens + Run.output_tokens), 0)).where(
            Run.team_id == team_id, Run.created_at >= since
        )
        async with self._read() as session:
            return int(await session.scalar(query) or 0)

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
                _check_choice("status", status, RUN_STATUSES)
            query = query.where(Run.status.in_(wanted))
        async with self._read() as session:
            return int(await session.scalar(query) or 0)

    # Helpers

    async def _files(self, query: Any) -> list[FileRecord]:
        async with self._read() as session:
            rows = await session.scalars(query.order_by(File.created_at, File.id))
            return [FileRecord.from_row(row) for row in rows]

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


async def _upsert(
    session: AsyncSession,
    model: type[ModelT],
    key: Mapping[str, Any],
    values: Mapping[str, Any],
) -> None:
    """Insert the row with `key`, or update it with `values` if it exists.

    On SQLite writes are serialised by BEGIN IMMEDIATE, so the row cannot appear between the
    look-up and the insert; on other databases it can, and the savepoint catches that case.
    """
    row = await session.scalar(select(model).filter_by(**key))
    if row is None:
        try:
            async with session.begin_nested():
                session.add(model(**key, **values))
            return
        except IntegrityError:
            row = await session.scalar(select(model).filter_by(**key))
            if row is None:
                raise
    for field, value in values.items():
        setattr(row, field, value)
