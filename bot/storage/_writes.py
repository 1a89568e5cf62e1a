"""Helpers every write of the Store shares: finishing a write its caller gave up on,
checking a value against the allowed ones before anything is written, and upserting a row."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.storage._models import Base, Workspace

P = ParamSpec("P")
T = TypeVar("T")
ModelT = TypeVar("ModelT", bound=Base)

_UNKNOWN_VALUE = "{what} must be one of {allowed}; got {value!r}."


def uncancellable(
    write: Callable[P, Awaitable[T]],
) -> Callable[P, Awaitable[T]]:
    """Run a write to the end even if its caller is cancelled.

    A write cut off mid-transaction can leave SQLite's write lock held, so the next write
    waits out the whole busy timeout and fails. Cancelling the caller stops its wait; the
    write itself finishes, and `Store.close()` waits for it (the store's `_pending`).
    """

    @functools.wraps(write)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        pending: set[asyncio.Future[Any]] = args[0]._pending  # type: ignore[attr-defined]
        task = asyncio.ensure_future(write(*args, **kwargs))
        pending.add(task)
        task.add_done_callback(pending.discard)
        return await asyncio.shield(task)

    return wrapper


def check_choice(what: str, value: str, allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(_UNKNOWN_VALUE.format(what=what, allowed=", ".join(allowed), value=value))


async def upsert(
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


async def ensure_workspace_row(session: AsyncSession, team_id: str, name: str | None) -> None:
    """The workspace's row, made if missing (named, when `name` is given)."""
    values = {"name": name} if name is not None else {}
    await upsert(session, Workspace, {"team_id": team_id}, values)
