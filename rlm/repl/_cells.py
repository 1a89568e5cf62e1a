"""What the host does to a sandbox between its cells, and what it keeps of the worker's stderr.

Nothing in a sandbox runs between cells. When a cell's result arrives, the host stops the
processes that were there when the worker said "ready" (the wrapper, the namespace's init, the
worker; SIGSTOP stops every thread of each) and kills every other process in the sandbox,
which the cell started; before its next message to the worker it continues them. Both steps
are the host's: nothing the cell can replace takes part. The host finds the sandbox's
processes itself: in the sandbox's cgroup where it has one, else in its PID namespace (every
process whose /proc/PID/ns/pid is the sandbox's), else, unisolated, among the worker's
descendants (the worker is their subreaper, so orphans stay among them).

The worker's stderr is a pipe the host drains as it comes, keeping a tail of a few KB: no
file on the host's disk stands behind any descriptor the worker holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

from rlm.repl._cgroup import SandboxCgroup

_TAIL_BYTES = 4096  # what the host keeps of the worker's stderr
_KILL_ROUNDS = 300  # waits growing to 10 ms: a few seconds at most
_Members = Callable[[], set[int]]


_SIGNAL_CAUSES = {
    "SIGKILL": ", likely the memory limit",
    "SIGXCPU": ", the CPU time limit",
    "SIGXFSZ": ", the file size limit",
}


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class CellClock:
    """One deadline for a cell, spent only while the host waits on the worker."""

    def __init__(self, seconds: float) -> None:
        self.left = seconds

    async def wait(self, awaitable: Awaitable[Any]) -> Any:
        started = time.perf_counter()
        try:
            return await asyncio.wait_for(awaitable, max(self.left, 0.0))
        finally:
            self.left -= time.perf_counter() - started


def exit_detail(returncode: int, wrapped: bool, killed_here: bool, stderr_tail: str) -> str:
    """What explains a worker's end: how it ended, unless by the host's own SIGKILL, and the
    last line of its stderr."""
    if returncode > 128 and wrapped:
        returncode = 128 - returncode  # the wrappers report a signal as 128 + its number
    detail = []
    if killed_here and returncode == -signal.SIGKILL:
        pass  # the caller says why it killed the worker
    elif returncode < 0:
        name = _signal_name(-returncode)
        detail.append(f"killed by {name}{_SIGNAL_CAUSES.get(name, '')}")
    elif returncode:
        detail.append(f"exit code {returncode}")
    if stderr_tail:
        detail.append(stderr_tail)
    return "; ".join(detail)


class StderrTail:
    """Drains the worker's stderr pipe into its last `_TAIL_BYTES` bytes."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._tail = bytearray()
        self._task = asyncio.create_task(self._drain(reader))

    async def _drain(self, reader: asyncio.StreamReader) -> None:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                return
            self._tail += chunk
            if len(self._tail) > _TAIL_BYTES:
                del self._tail[: len(self._tail) - _TAIL_BYTES]

    async def finish(self, within: float) -> None:
        """Read until the pipe's end, for `within` seconds at most (a process that got away
        may hold it open), then stop reading."""
        await asyncio.wait([self._task], timeout=within)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task

    def last_line(self, limit: int = 400) -> str:
        """The last line the worker wrote to stderr, at most `limit` bytes of it."""
        text = bytes(self._tail[-limit:]).decode("utf-8", "replace")
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return lines[-1] if lines else ""


class SandboxProcesses:
    """One sandbox's processes as the host sees them: the `keepers` that were there when the
    worker said "ready", and every other one, found by `members`.

    The keepers are signalled through pidfds held from the start, so that a keeper that died
    and was reaped can never be confused with a process that got its pid later.
    """

    def __init__(self, keepers: frozenset[int], members: _Members, how: str) -> None:
        self.keepers = keepers
        self._members = members
        self.how = how  # "cgroup", "namespace" or "descendants": where `members` looks
        self.stopped = False
        self._keeper_fds: list[int] = []
        for pid in keepers:
            with contextlib.suppress(OSError):
                self._keeper_fds.append(os.pidfd_open(pid))

    @classmethod
    def at_ready(cls, root: int, cgroup: SandboxCgroup | None, isolated: bool) -> SandboxProcesses:
        """The sandbox started as `root` (the process the host spawned), as it stands now."""
        tree = _descendants(root) | {root}
        if cgroup is not None:
            members = cgroup.current_processes
            return cls(frozenset(tree | members()), members, "cgroup")
        host = _namespace(os.getpid())
        spaces = {_namespace(pid) for pid in tree} - {host, ""}
        if isolated and spaces:
            return cls(frozenset(tree), lambda: _in_namespaces(spaces), "namespace")
        return cls(frozenset(tree), lambda: _descendants(root), "descendants")

    def others(self) -> set[int]:
        """The living processes of the sandbox that are not keepers."""
        return {pid for pid in self._members() - self.keepers if _alive(pid)}

    def pause(self) -> int:
        """Stop the keepers and kill every other process, until none is left; returns how
        many were killed. Blocking: run it in a thread."""
        self._signal_keepers(signal.SIGSTOP)
        killed = 0
        for attempt in range(_KILL_ROUNDS):
            others = self.others()
            if not others:
                break
            killed += self._stop_then_kill(others)
            time.sleep(min(0.0002 * 2**attempt, 0.01))
        # Again: a process killed above may have continued a keeper before it died.
        self._signal_keepers(signal.SIGSTOP)
        self.stopped = True
        return killed

    def resume(self) -> None:
        self.stopped = False
        self._signal_keepers(signal.SIGCONT)

    def kill_all(self) -> None:
        """Kill everything: the others first (unisolated, the worker is how they are found),
        then the keepers; and let go of the keepers' pidfds."""
        self.pause()
        self._signal_keepers(signal.SIGKILL)
        for pidfd in self._keeper_fds:
            os.close(pidfd)
        self._keeper_fds = []

    def _signal_keepers(self, signum: int) -> None:
        for pidfd in self._keeper_fds:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(pidfd, signum)

    def _stop_then_kill(self, pids: set[int]) -> int:
        # A pidfd, checked against a second listing, makes sure that a pid that exited and
        # was reused outside the sandbox is never signalled.
        pidfds: dict[int, int] = {}
        try:
            for pid in pids:
                with contextlib.suppress(OSError):
                    pidfds[pid] = os.pidfd_open(pid)
            inside = self._members() - self.keepers
            held = [fd for pid, fd in pidfds.items() if pid in inside]
            for signum in (signal.SIGSTOP, signal.SIGKILL):  # stopped, none forks any more
                for pidfd in held:
                    with contextlib.suppress(OSError):
                        signal.pidfd_send_signal(pidfd, signum)
            return len(held)
        finally:
            for pidfd in pidfds.values():
                os.close(pidfd)


def _namespace(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    """True unless `pid` is gone or a zombie (already dead, waiting for its parent)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def _pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _in_namespaces(spaces: set[str]) -> set[int]:
    return {pid for pid in _pids() if _namespace(pid) in spaces}


def _descendants(root: int) -> set[int]:
    parents: dict[int, int] = {}
    for pid in _pids():
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        parents[pid] = int(fields[1])
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found
