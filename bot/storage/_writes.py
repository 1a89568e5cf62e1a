"""Helpers every write of the Store shares: finishing a write its caller gave up on, and
checking a value against the allowed ones before anything is written."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

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
