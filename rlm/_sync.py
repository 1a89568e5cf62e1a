"""Run a coroutine to completion from synchronous code, wherever that code runs.

With no event loop running in this thread, the coroutine runs on a fresh loop. With one
running (a notebook, an async framework calling sync code), it runs on a fresh loop in a
helper thread: `asyncio.run` is never called inside a running loop. Either way, resources
registered for the fresh loop (async SDK clients) are closed before the loop is.

The provider interfaces' own sync calls (`query`, `chat`) go to one private loop in a daemon
thread instead, so their async clients are opened once and reused (see `run_on_private_loop`).
"""

from __future__ import annotations

import asyncio
import atexit
import os
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


class _PrivateLoop:
    """One event loop in a daemon thread, kept for the process, for the interfaces' sync calls.

    A sync `query()` on it reuses the interface's async client from one call to the next
    instead of opening a client (and a loop) per call. Clients opened on it are closed by
    `close()`, which runs at interpreter exit; after a fork the child starts its own.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                ready = threading.Event()
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=self._serve, args=(loop, ready), name="rlm-sync-loop", daemon=True
                )
                thread.start()
                ready.wait()
                if self._pid == 0:
                    atexit.register(self.close)
                self._loop, self._thread, self._pid = loop, thread, os.getpid()
            return self._loop

    def is_current(self, loop: asyncio.AbstractEventLoop) -> bool:
        return loop is self._loop

    def owns_current_thread(self) -> bool:
        return self._thread is threading.current_thread()

    @staticmethod
    def _serve(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        loop.run_forever()

    def close(self) -> None:
        """Close every client opened on the loop, then the loop itself."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None or self._pid != os.getpid():
            return
        future = asyncio.run_coroutine_threadsafe(_run_with_cleanup(asyncio.sleep(0)), loop)
        try:
            future.result(timeout=10)
        except Exception:  # closing must not fail the exit
            pass
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        if not thread.is_alive():
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


_private_loop = _PrivateLoop()


def is_private_loop(loop: asyncio.AbstractEventLoop) -> bool:
    return _private_loop.is_current(loop)


def run_on_private_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on the private loop and wait for it, from any thread or running loop.

    Called from the private loop's own thread (a callback of a call running there), it
    falls back to `run_sync`, which cannot deadlock.
    """
    if _private_loop.owns_current_thread():
        return run_sync(coro)
    future = asyncio.run_coroutine_threadsafe(coro, _private_loop.loop())
    try:
        return future.result()
    except BaseException:
        future.cancel()  # interrupted (Ctrl-C): stop the call rather than leave it running
        raise
