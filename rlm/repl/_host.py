"""The host side of the sandboxed REPL: starts the worker, runs cells, serves its sub-calls.

The worker is a fresh interpreter (never a fork of the host), started in its own temporary
directory with an environment that holds no secrets, inside the isolation `_sandbox` chose
(no network, no view of the host's files or processes). Each cell has a time limit that counts
only the worker's own time, not the time the host spends serving its sub-calls. A worker
that dies or times out is reported as an error and replaced by a fresh one holding the same
context; its variables are lost, and the output says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import struct
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlm._exceptions import REPLError
from rlm.repl._sandbox import (
    WorkerLaunch,
    build_launch,
    choose_method,
    sandbox_uid,
    validate_choice,
)

_HEADER = struct.Struct(">I")
_WORKER = Path(__file__).with_name("_worker.py")

LLMQuery = Callable[[str], Awaitable[str]]
ParallelQuery = Callable[[str, list[str]], Awaitable[list[str]]]


@dataclass(frozen=True)
class CellResult:
    output: str
    error: bool
    seconds: float
    final: dict[str, Any] | None = None  # FINAL()/FINAL_VAR() called inside the code
    worker_lost: bool = False


@dataclass(frozen=True)
class SandboxLimits:
    """How the worker is confined: resource limits (setrlimit) and isolation.

    `isolation`: "auto" uses bwrap, else unshare, else (with a loud warning) none; "bwrap" or
    "unshare" insist on that method; "none" runs the worker unisolated. With
    `require_isolation`, a session that cannot isolate refuses to start (REPLError).
    `processes` (RLIMIT_NPROC) holds only when isolated: it counts all of a uid's processes.
    """

    memory_mb: int = 4096
    file_size_mb: int = 512
    open_files: int = 256
    cpu_seconds: int = 600
    processes: int = 64
    isolation: str = "auto"
    require_isolation: bool = False
    max_message_mb: int = 256  # the largest frame the host accepts from the worker

    def __post_init__(self) -> None:
        validate_choice(self.isolation, self.require_isolation)

    def as_rlimits(self) -> dict[str, int]:
        return {
            "RLIMIT_AS": self.memory_mb * 1024 * 1024,
            "RLIMIT_FSIZE": self.file_size_mb * 1024 * 1024,
            "RLIMIT_NOFILE": self.open_files,
            "RLIMIT_CPU": self.cpu_seconds,
            "RLIMIT_NPROC": self.processes,
            "RLIMIT_CORE": 0,
        }


class _ProtocolError(Exception):
    """The worker sent something that is not a frame of the protocol."""


def clean_environment(workdir: str) -> dict[str, str]:
    """The worker's whole environment: no keys, no tokens, nothing inherited."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONIOENCODING": "utf-8",
    }


def write_context(context: str | Sequence[str], directory: str) -> tuple[str, str]:
    """Write the context once to a file the worker loads; returns (path, kind)."""
    if isinstance(context, str):
        path = os.path.join(directory, "context.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write(context)
        return path, "str"
    path = os.path.join(directory, "context.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump([str(c) for c in context], f, ensure_ascii=False)
    return path, "list"


def _cell_result(message: dict[str, Any], seconds: float) -> CellResult:
    output, error, final = message.get("output"), message.get("error"), message.get("final")
    if not isinstance(output, str) or not isinstance(error, bool):
        raise _ProtocolError("a result without output")
    return CellResult(output, error, seconds, final if isinstance(final, dict) else None)


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


class REPLSession:
    """One worker holding `context` and the namespace across cells."""

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
    ) -> None:
        self._context = context
        self._llm_query = llm_query
        self._parallel_query = parallel_query
        self._subcalls_enabled = subcalls_enabled
        self.cell_timeout = cell_timeout
        self.start_timeout = start_timeout
        self.limits = limits or SandboxLimits()
        self._dir: str | None = None
        self._context_file: tuple[str, str] | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._launch: WorkerLaunch | None = None
        self.restarts = 0

    @property
    def workdir(self) -> str | None:
        return self._dir

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def isolation(self) -> str | None:
        """The isolation method in use ("bwrap", "unshare" or "none"); None before start."""
        return self._launch.method if self._launch else None

    async def __aenter__(self) -> REPLSession:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Start the worker; raises REPLError if it cannot, or cannot be isolated as required."""
        if self._dir is None:
            method, error = await asyncio.to_thread(
                choose_method, self.limits.isolation, self.limits.require_isolation
            )
            if error:
                raise REPLError(error)
            self._dir = tempfile.mkdtemp(prefix="rlm-repl-")
            os.chmod(self._dir, 0o700)
            uid = None
            if method != "none" and os.geteuid() == 0:
                # The worker drops to `uid`; root without capabilities (the wrapper, before
                # the drop) still gets in as the group.
                uid = sandbox_uid()
                os.chown(self._dir, uid, os.getegid())
                os.chmod(self._dir, 0o770)
            self._context_file = await asyncio.to_thread(write_context, self._context, self._dir)
            self._context = ""  # the file holds it now; don't keep a second copy alive here
            if uid is not None:
                os.chown(self._context_file[0], uid, os.getegid())
            self._launch = build_launch(
                method,
                [sys.executable, "-I", str(_WORKER)],
                workdir=self._dir,
                keep=[str(_WORKER)],
                uid=uid,
            )
        await self._spawn()

    async def _spawn(self) -> None:
        assert self._dir is not None and self._context_file is not None
        assert self._launch is not None
        limits = self.limits.as_rlimits()
        if self._launch.method == "none":
            del limits["RLIMIT_NPROC"]  # it would count every process of the host's user
        stderr_path = os.path.join(self._dir, "worker.stderr")
        with open(stderr_path, "ab") as stderr:  # noqa: ASYNC230 - a local file, opened once
            self._proc = await asyncio.create_subprocess_exec(
                *self._launch.argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                cwd=self._dir,
                env=clean_environment(self._dir),
                start_new_session=True,  # its own process group, so a kill takes its children too
                close_fds=True,
            )
        path, kind = self._context_file
        init = {
            "op": "init",
            "context_path": path,
            "context_kind": kind,
            "limits": limits,
            "subcalls": self._subcalls_enabled,
            "sandbox": self._launch.confine,
        }
        try:
            await self._send(init)
            ready = await asyncio.wait_for(self._receive(), self.start_timeout)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, _ProtocolError) as exc:
            detail = await self._kill(grace=1.0)
            raise REPLError(f"the REPL worker did not start: {detail or exc!r}") from exc
        if "error" in ready:
            await self._kill()
            raise REPLError(f"the REPL worker could not start: {ready['error']}")

    async def _send(self, message: dict[str, Any]) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        data = json.dumps(message, ensure_ascii=False).encode("utf-8")
        self._proc.stdin.write(_HEADER.pack(len(data)) + data)
        await self._proc.stdin.drain()

    async def _receive(self) -> dict[str, Any]:
        # Generated code can write to the protocol pipe too: never trust a frame's size or shape.
        assert self._proc is not None and self._proc.stdout is not None
        header = await self._proc.stdout.readexactly(_HEADER.size)
        (size,) = _HEADER.unpack(header)
        if size > self.limits.max_message_mb * 1024 * 1024:
            raise _ProtocolError(
                f"a {size}-byte message, over the {self.limits.max_message_mb} MB limit"
            )
        try:
            message = json.loads(await self._proc.stdout.readexactly(size))
        except ValueError as exc:
            raise _ProtocolError("a message that is not JSON") from exc
        if not isinstance(message, dict) or not isinstance(message.get("op"), str):
            raise _ProtocolError("a message without an operation")
        return message

    async def run_cell(self, code: str) -> CellResult:
        """Run `code` in the worker; errors in the code come back as output, never raise."""
        if self._proc is None:
            await self.start()
        started = time.perf_counter()
        budget = self.cell_timeout
        try:
            await self._send({"op": "exec", "code": code})
            while True:
                waited_from = time.perf_counter()
                message = await asyncio.wait_for(self._receive(), budget)
                budget -= time.perf_counter() - waited_from
                if message["op"] == "result":
                    return _cell_result(message, time.perf_counter() - started)
                await self._send(await self._serve(message))
        except TimeoutError:
            reason = f"the cell ran longer than its {self.cell_timeout:g} s limit and was stopped"
        except (asyncio.IncompleteReadError, ConnectionError, BrokenPipeError):
            reason = "the REPL worker crashed"
        except _ProtocolError as exc:
            reason = f"the REPL worker sent {exc} and was stopped"
        detail = await self._kill(grace=1.0 if reason.endswith("crashed") else 0.0)
        await self._restart()
        note = f"Error: {reason}{f' ({detail})' if detail else ''}. "
        note += "A fresh REPL was started: `context` is loaded again, but variables from "
        note += "earlier cells are gone."
        return CellResult(note, True, time.perf_counter() - started, worker_lost=True)

    async def _serve(self, message: dict[str, Any]) -> dict[str, Any]:
        op = message.get("op")
        try:
            if op == "llm_query":
                return {"result": await self._llm_query(message["prompt"])}
            if op == "parallel_query":
                return {
                    "result": await self._parallel_query(message["template"], message["chunks"])
                }
        except Exception as exc:  # reported into the model's code as a RuntimeError
            return {"error": str(exc) or type(exc).__name__}
        return {"error": f"unknown request {op!r}"}

    async def get_variable(self, name: str) -> str | None:
        """The value of `name` in the worker's namespace as text, or None if it is not set."""
        if self._proc is None:
            return None
        try:
            await self._send({"op": "variable", "name": name})
            reply = await asyncio.wait_for(self._receive(), self.cell_timeout)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, _ProtocolError):
            await self._kill()
            await self._restart()
            return None
        value = reply.get("value")
        return value if reply.get("found") and isinstance(value, str) else None

    async def _restart(self) -> None:
        self.restarts += 1
        try:
            await self._spawn()
        except REPLError:
            self._proc = None  # the next cell tries again and reports if it still fails

    async def _kill(self, *, grace: float = 0.0) -> str:
        """Stop the worker and its process group; returns what explains its end, if anything.

        A worker that is ending by itself gets `grace` seconds to do so, so that its own exit
        status is reported rather than the SIGKILL sent here, which is not news.
        """
        proc, self._proc = self._proc, None
        if proc is None:
            return ""
        if grace and proc.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), grace)
        stopped_here = proc.returncode is None
        # Signal with os.kill/killpg only: Popen.kill() polls first, and that poll can reap
        # the child before asyncio's watcher does, which then reports a bogus exit code 255.
        if proc.returncode is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(proc.pid, signal.SIGKILL)
        returncode = await proc.wait()
        if proc.stdin is not None:
            proc.stdin.close()
        if returncode and returncode > 128 and self.isolation != "none":
            returncode = 128 - returncode  # the wrappers report a signal as 128 + its number
        detail = []
        if stopped_here and returncode == -signal.SIGKILL:
            pass  # the SIGKILL sent above: the caller says why
        elif returncode and returncode < 0:
            name = _signal_name(-returncode)
            detail.append(f"killed by {name}{_SIGNAL_CAUSES.get(name, '')}")
        elif returncode:
            detail.append(f"exit code {returncode}")
        tail = self._stderr_tail()
        if tail:
            detail.append(tail)
        return "; ".join(detail)

    def _stderr_tail(self, limit: int = 400) -> str:
        if self._dir is None:
            return ""
        path = os.path.join(self._dir, "worker.stderr")
        try:
            with open(path, "rb") as f:
                f.seek(max(0, os.path.getsize(path) - limit))
                text = f.read().decode("utf-8", "replace").strip()
            open(path, "wb").close()
        except OSError:
            return ""
        lines = [line for line in text.splitlines() if line.strip()]
        return lines[-1] if lines else ""

    async def close(self) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(Exception):
                await self._send({"op": "exit"})
                await asyncio.wait_for(proc.wait(), 1.0)
        await self._kill()
        if self._dir is not None:
            await asyncio.to_thread(shutil.rmtree, self._dir, True)
            self._dir = None
