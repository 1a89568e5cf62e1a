"""The host side of the sandboxed REPL: starts the worker, runs cells, serves its sub-calls.

The worker is a fresh interpreter (never a fork of the host), started in its own temporary
directory with an environment that holds no secrets, inside the isolation `_sandbox` chose
(no network, no view of the host's files or processes) and, where the machine allows, a cgroup
of its own. The host never opens anything by a path the worker can write: the context is a
read-only file without a name that the host holds open, the worker's stderr a pipe the host
drains, and every frame from the worker is checked against `_protocol`'s schema, and held to
its caps, before the host acts on it (`_frames`). Every mode is the host's: with sub-calls
off, the host refuses their requests itself. Each cell has one clock that runs whenever the
host waits on the worker (reading its frames or writing to it) and stops only while the host
itself makes the cell's sub-calls; between cells nothing in the sandbox runs (`_cells`). A
worker that dies or times out is reported as an error and replaced by a fresh one holding the
same context; its variables are lost, and the output says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import IO, Any

from rlm._exceptions import REPLError
from rlm.repl._cells import CellClock, SandboxProcesses, StderrTail, exit_detail
from rlm.repl._cgroup import SandboxCgroup, dies_first
from rlm.repl._files import remove_stale_workdirs, write_context
from rlm.repl._frames import receive
from rlm.repl._identity import UidLease, lease_uid
from rlm.repl._limits import SandboxLimits, clean_environment
from rlm.repl._protocol import ProtocolError, pack
from rlm.repl._sandbox import (
    WorkerLaunch,
    build_launch,
    choose_method,
    init_frame,
    worker_command,
)

_IN_CELL = ("result", "llm_query", "parallel_query")
_WORKER_NOTE_ROOM = 200  # characters of the cap left for the worker's note of what it dropped
MSG_SUBCALLS_OFF = "sub-calls are disabled in this prompt mode; work with `context` directly"

LLMQuery = Callable[[str], Awaitable[str]]
ParallelQuery = Callable[[str, list[str]], Awaitable[list[str]]]


@dataclass(frozen=True)
class CellResult:
    output: str
    error: bool
    seconds: float
    final: dict[str, Any] | None = None  # FINAL()/FINAL_VAR() called inside the code
    worker_lost: bool = False
    answer_left_out: int = 0  # characters of the FINAL value past the answer cap


def _cell_result(message: dict[str, Any], seconds: float, cut: dict[str, int]) -> CellResult:
    answer_cut = cut.get("answer", 0)
    return CellResult(
        message["output"], message["error"], seconds, message["final"], False, answer_cut
    )


class REPLSession:
    """One worker holding `context` and the namespace across cells.

    `max_answer_chars` caps a FINAL value and the variable FINAL_VAR names, as the host reads
    them; `limits.max_cell_output_chars` caps a cell's output.
    """

    def __init__(
        self,
        context: str | Sequence[str],
        *,
        llm_query: LLMQuery,
        parallel_query: ParallelQuery,
        subcalls_enabled: bool = True,
        cell_timeout: float = 60.0,
        limits: SandboxLimits | None = None,
        start_timeout: float = 60.0,
        max_answer_chars: int = 1_000_000,
    ) -> None:
        self._context = context
        self._llm_query = llm_query
        self._parallel_query = parallel_query
        self._subcalls_enabled = subcalls_enabled
        self.cell_timeout = cell_timeout
        self.start_timeout = start_timeout
        self.limits = limits or SandboxLimits()
        self.max_answer_chars = max_answer_chars
        self._dir: str | None = None
        self._context_file: IO[bytes] | None = None
        self._context_kind = "str"
        self._stderr: StderrTail | None = None
        self._cgroup: SandboxCgroup | None = None
        self._uid_lease: UidLease | None = None  # a root host's worker runs as this uid
        self._proc: asyncio.subprocess.Process | None = None
        self._processes: SandboxProcesses | None = None
        self._launch: WorkerLaunch | None = None
        self.restarts = 0

    @property
    def workdir(self) -> str | None:
        """The worker's directory as the worker sees it (isolated, a tmpfs of its own)."""
        return self._dir

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def isolation(self) -> str | None:
        """The isolation method in use ("bwrap", "unshare" or "none"); None before start."""
        return self._launch.method if self._launch else None

    @property
    def cgroup(self) -> SandboxCgroup | None:
        return self._cgroup

    @property
    def processes(self) -> SandboxProcesses | None:
        """The sandbox's processes as the host tracks them (stopped between cells)."""
        return self._processes

    async def __aenter__(self) -> REPLSession:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Start the worker; raises REPLError if it cannot, or cannot be isolated as required."""
        if self._dir is None:
            await asyncio.to_thread(self._prepare)
        await self._spawn()

    def _prepare(self) -> None:
        """Choose the method and lay out what every spawn of this session reuses."""
        limits = self.limits
        method, error = choose_method(limits.isolation, limits.require_isolation)
        if error:
            raise REPLError(error)
        remove_stale_workdirs()
        # Isolated, the worker gets a tmpfs at this path in its own mount namespace: the
        # host's directory stays empty and the worker's uid cannot enter it.
        self._dir = tempfile.mkdtemp(prefix=f"rlm-repl-{os.getpid()}-")
        self._context_file, self._context_kind = write_context(self._context)
        self._context = ""  # the file holds it now; don't keep a second copy alive here
        if method != "none" and os.geteuid() == 0:
            try:
                self._uid_lease = lease_uid()
            except OSError as exc:
                raise REPLError(str(exc.strerror or exc)) from None
        self._launch = build_launch(
            method,
            worker_command(),
            workdir=self._dir,
            uid=self._uid_lease.uid if self._uid_lease else None,
            disk_bytes=limits.disk_mb * 1024 * 1024,
            packages=limits.packages,
        )
        if method != "none":
            self._cgroup = SandboxCgroup.create(
                memory_bytes=limits.memory_mb * 1024 * 1024, max_processes=limits.processes
            )

    async def _spawn(self) -> None:
        assert self._dir is not None and self._context_file is not None
        assert self._launch is not None
        limits = self.limits.as_rlimits()
        if self._launch.method == "none":
            del limits["RLIMIT_NPROC"]  # it would count every process of the host's user
        argv = self._launch.argv
        argv = self._cgroup.wrap(argv) if self._cgroup is not None else dies_first(argv)
        context_fd = self._context_file.fileno()
        # stderr is a pipe, drained as it comes: no file of the host's disk behind it that
        # the worker could grow, or reserve space in with fallocate.
        self._proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=self._dir if self._launch.method == "none" else "/",
            env={**clean_environment(self._dir), **self._launch.env},
            start_new_session=True,  # its own process group, so a kill takes its children too
            close_fds=True,
            pass_fds=(context_fd,),
        )
        assert self._proc.stderr is not None
        self._stderr = StderrTail(self._proc.stderr)
        self._processes = None
        init = init_frame(
            self._launch,
            context_fd=context_fd,
            context_kind=self._context_kind,
            rlimits=limits,
            subcalls=self._subcalls_enabled,
        )
        # The worker keeps less, so that its own note of what it dropped fits in the cap.
        init["output_chars"] = max(0, self.limits.max_cell_output_chars - _WORKER_NOTE_ROOM)
        try:
            await asyncio.wait_for(self._send(init), self.start_timeout)
            ready, _ = await asyncio.wait_for(self._receive(("ready",)), self.start_timeout)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ProtocolError) as exc:
            detail = await self._kill(grace=1.0)
            raise REPLError(f"the REPL worker did not start: {detail or exc!r}") from exc
        if "error" in ready:
            await self._kill()
            raise REPLError(f"the REPL worker could not start: {ready['error']}")
        # What runs now is the sandbox's own: the wrapper, the namespace's init, the worker.
        self._processes = await asyncio.to_thread(
            SandboxProcesses.at_ready, self._proc.pid, self._cgroup, self.isolation != "none"
        )
        await asyncio.to_thread(self._processes.pause)

    async def _send(self, message: dict[str, Any]) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        if self._processes is not None and self._processes.stopped:
            await asyncio.to_thread(self._processes.resume)  # only to read what comes now
        if isinstance(message.get("result"), list) and len(message["result"]) > 256:
            data = await asyncio.to_thread(pack, message)  # a long map's answers, item by item
        else:
            data = pack(message)
        self._proc.stdin.write(data)
        await self._proc.stdin.drain()

    async def _receive(self, expected: Collection[str]) -> tuple[dict[str, Any], dict[str, int]]:
        """The next message, checked and capped, and the characters each cap left out."""
        assert self._proc is not None and self._proc.stdout is not None
        caps = {"output": self.limits.max_cell_output_chars, "answer": self.max_answer_chars}
        return await receive(
            self._proc.stdout,
            expected,
            max_bytes=self.limits.max_message_mb * 1024 * 1024,
            caps=caps,
        )

    async def _pause(self) -> None:
        """Stop the sandbox until the host's next message, and kill what the cell started."""
        if self._processes is not None:
            await asyncio.to_thread(self._processes.pause)

    async def run_cell(self, code: str, *, time_left: float | None = None) -> CellResult:
        """Run `code` in the worker; errors in the code come back as output, never raise.

        `time_left` is what is left of the run's time, if that is less than `cell_timeout`.
        """
        if self._proc is None:
            await self.start()
        started = time.perf_counter()
        limit = self.cell_timeout if time_left is None else min(time_left, self.cell_timeout)
        clock = CellClock(limit)
        try:
            await clock.wait(self._send({"op": "exec", "code": code}))
            while True:
                message, cut = await clock.wait(self._receive(_IN_CELL))
                if message["op"] == "result":
                    await self._pause()
                    return _cell_result(message, time.perf_counter() - started, cut)
                reply = await self._serve(message)  # the host's own time: off the clock
                await clock.wait(self._send(reply))
        except TimeoutError:
            reason = f"the cell ran longer than its {limit:g} s limit and was stopped"
            if limit < self.cell_timeout:
                reason = f"the cell ran past the run's time budget ({limit:.1f} s were left)"
        except (asyncio.IncompleteReadError, ConnectionError, BrokenPipeError):
            reason = "the REPL worker crashed"
        except ProtocolError as exc:
            reason = f"the REPL worker sent {exc} and was stopped"
        detail = await self._kill(grace=1.0 if reason.endswith("crashed") else 0.0)
        await self._restart()
        note = f"Error: {reason}{f' ({detail})' if detail else ''}. "
        note += "A fresh REPL was started: `context` is loaded again, but variables and files "
        note += "from earlier cells are gone."
        return CellResult(note, True, time.perf_counter() - started, worker_lost=True)

    async def _serve(self, message: dict[str, Any]) -> dict[str, Any]:
        if not self._subcalls_enabled:  # the worker checks too, in code the cell can change
            return {"error": MSG_SUBCALLS_OFF}
        try:
            if message["op"] == "llm_query":
                result: str | list[str] = await self._llm_query(message["prompt"])
            else:
                result = await self._parallel_query(message["template"], message["chunks"])
        except Exception as exc:  # reported into the model's code as a RuntimeError
            return {"error": str(exc) or type(exc).__name__}
        return {"result": result}

    async def get_variable(self, name: str) -> str | None:
        """The value of `name` in the worker's namespace as text, or None if it is not set."""
        return (await self.fetch_variable(name))[0]

    async def fetch_variable(self, name: str) -> tuple[str | None, int]:
        """`get_variable`, and how many characters past `max_answer_chars` were left out."""
        if self._proc is None:
            return None, 0
        clock = CellClock(self.cell_timeout)
        try:
            await clock.wait(self._send({"op": "variable", "name": name}))
            reply, cut = await clock.wait(self._receive(("variable",)))
            await self._pause()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, ProtocolError):
            await self._kill()
            await self._restart()
            return None, 0
        value = reply.get("value")
        if reply["found"] and isinstance(value, str):
            return value, cut.get("answer", 0)
        return None, 0

    async def _restart(self) -> None:
        self.restarts += 1
        try:
            await self._spawn()
        except REPLError:
            self._proc = None  # the next cell tries again and reports if it still fails

    async def _kill(self, *, grace: float = 0.0) -> str:
        """Stop the worker and everything it started; returns what explains its end, if
        anything.

        A worker that is ending by itself gets `grace` seconds to do so, so that its own exit
        status is reported rather than the SIGKILL sent here, which is not news.
        """
        proc, self._proc = self._proc, None
        processes, self._processes = self._processes, None
        if proc is None:
            return ""
        if grace and proc.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), grace)
        stopped_here = proc.returncode is None
        if processes is not None:  # found by the host: the cgroup, the namespace, or the tree
            await asyncio.to_thread(processes.kill_all)
        if self._cgroup is not None:  # every process in the sandbox, however it got away
            await asyncio.to_thread(self._cgroup.kill)
        # Signal with os.kill/killpg only: Popen.kill() polls first, and that poll can reap
        # the child before asyncio's watcher does, which then reports a bogus exit code 255.
        if proc.returncode is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(proc.pid, signal.SIGKILL)
        tail = ""
        if self._stderr is not None:
            await self._stderr.finish(within=0.5)
            tail = self._stderr.last_line()
        # A worker that died mid-write can leave the reader paused on a full buffer, and a
        # process that got away may hold stderr open; then the pipes' end is never seen and
        # wait() never returns. What they hold is of no use now.
        for fd in (1, 2):
            with contextlib.suppress(AttributeError):
                proc._transport.get_pipe_transport(fd).close()  # type: ignore[attr-defined]
        returncode = await proc.wait()
        if proc.stdin is not None:
            proc.stdin.close()
        return exit_detail(returncode, self.isolation != "none", stopped_here, tail)

    async def close(self) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(Exception):
                await self._send({"op": "exit"})
                await asyncio.wait_for(proc.wait(), 1.0)
        await self._kill()
        self._stderr = None
        if self._context_file is not None:
            self._context_file.close()
            self._context_file = None
        if self._cgroup is not None:
            await asyncio.to_thread(self._cgroup.remove)
            self._cgroup = None
        if self._uid_lease is not None:  # nothing runs as it now: the sandbox is gone
            self._uid_lease.release()
            self._uid_lease = None
        if self._dir is not None:
            await asyncio.to_thread(shutil.rmtree, self._dir, True)
            self._dir = None
