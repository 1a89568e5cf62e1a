"""Run a coroutine to completion from synchronous code, wherever that code runs.

With no event loop running in this thread, the coroutine runs on a fresh loop. With one
running (a notebook, an async framework calling sync code), it runs on a fresh loop in a
helper thread: `asyncio.run` is never called inside a running loop. Either way, resources
registered for the fresh loop (async SDK clients) are closed before the loop is.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_cleanups: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, list[Callable[[], Awaitable[None]]]
] = weakref.WeakKeyDictionary()
_cleanups_lock = threading.Lock()


def on_loop_close(loop: asyncio.AbstractEventLoop, cleanup: Callable[[], Awaitable[None]]) -> None:
    """Ask for `cleanup()` to be awaited before `run_sync` closes `loop`.

    Loops that `run_sync` did not create are never closed by it; their owners close what
    they opened (see `LLMInterface.aclose`).
    """
    with _cleanups_lock:
        _cleanups.setdefault(loop, []).append(cleanup)


async def _run_with_cleanup(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return await coro
    finally:
        loop = asyncio.get_running_loop()
        with _cleanups_lock:
            cleanups = _cleanups.pop(loop, [])
        for cleanup in cleanups:
            try:
                await cleanup()
            except Exception:  # closing must not hide the result or the real error
                pass


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to completion and return its result, from any synchronous context."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_run_with_cleanup(coro))

    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(_run_with_cleanup(coro)))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name="rlm-sync-bridge", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]
