"""The host side of the sandboxed REPL: starts the worker, runs cells, serves its sub-calls.

The worker is a fresh interpreter (never a fork of the host), started in its own temporary
directory with an environment that holds no secrets, inside the isolation `_sandbox` chose
(no network, no view of the host's files or processes) and, where the machine allows, a cgroup
of its own. The host never opens anything by a path the worker can write: the context and the
worker's stderr are files without a name that the host holds open, and every frame from the
worker is checked against `_protocol`'s schema before the host acts on it. Each cell has one
clock that runs whenever the host waits on the worker (reading its frames or writing to it)
and stops only while the host itself makes the cell's sub-calls. A worker that dies or times
out is reported as an error and replaced by a fresh one holding the same context; its
variables are lost, and the output says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import IO, Any

from rlm._exceptions import REPLError
from rlm.repl._cgroup import SandboxCgroup, remove_stale_cgroups
from rlm.repl._protocol import (
    LENGTH,
    ProtocolError,
    attach_parts,
    check_message,
    decode_parts,
    header_size,
    pack,
    parse_header,
)
from rlm.repl._sandbox import (
    WorkerLaunch,
    build_launch,
    choose_method,
    init_frame,
    sandbox_uid,
    validate_choice,
    worker_command,
)
from rlm.repl._view import check_packages

_BIG_MESSAGE = 1024 * 1024  # parts past this are decoded off the event loop
_IN_CELL = ("result", "llm_query", "parallel_query")

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
    Where the machine has cgroups, `memory_mb` and `processes` also bound the whole sandbox
    (every process in it, and its tmpfs). `disk_mb` is the size of the worker's directory.
    The worker's filesystem is an allowlist (see `_view`): `packages` names installed
    distributions whose files it may also read and import (an unknown name is a
    ConfigurationError). `private_paths` is accepted for compatibility and changes nothing:
    no host path outside the allowlist is visible.
    """

    memory_mb: int = 4096
    file_size_mb: int = 512
    open_files: int = 256
    cpu_seconds: int = 600
    processes: int = 64
    disk_mb: int = 512
    isolation: str = "auto"
    require_isolation: bool = False
    max_message_mb: int = 256  # the largest frame the host accepts from the worker
    private_paths: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        validate_choice(self.isolation, self.require_isolation)
        check_packages(self.packages)

    def as_rlimits(self) -> dict[str, int]:
        return {
            "RLIMIT_AS": self.memory_mb * 1024 * 1024,
            "RLIMIT_FSIZE": self.file_size_mb * 1024 * 1024,
            "RLIMIT_NOFILE": self.open_files,
            "RLIMIT_CPU": self.cpu_seconds,
            "RLIMIT_NPROC": self.processes,
            "RLIMIT_CORE": 0,
        }


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


def write_context(context: str | Sequence[str]) -> tuple[IO[bytes], str]:
    """The context in a file with no name (only the returned handle reaches it), open
    read-only for the worker to inherit; returns (file, kind)."""
    kind = "str" if isinstance(context, str) else "list"
    with tempfile.TemporaryFile() as writable:
        if isinstance(context, str):
            writable.write(context.encode("utf-8"))
        else:
            writable.write(json.dumps([str(c) for c in context], ensure_ascii=False).encode())
        writable.flush()
        # A second, read-only description of the same file: the worker cannot change it.
        read_only = os.open(f"/proc/self/fd/{writable.fileno()}", os.O_RDONLY | os.O_CLOEXEC)
    return os.fdopen(read_only, "rb"), kind


_STALE_DIR = re.compile(r"rlm-(?:repl|probe)-(?:(\d+)-.*|[a-z0-9_]{8})")
_stale_lock = threading.Lock()
_stale_checked = False


def remove_stale_workdirs() -> int:
    """Once per process: remove worker directories that crashed hosts left behind (a dead
    host's pid in the name, or the unnamed ones of earlier versions)."""
    global _stale_checked
    with _stale_lock:
        if _stale_checked:
            return 0
        _stale_checked = True
    removed = 0
    top = tempfile.gettempdir()
    for name in os.listdir(top):
        match = _STALE_DIR.fullmatch(name)
        if match is None or (match.group(1) and os.path.exists(f"/proc/{match.group(1)}")):
            continue  # not ours, or its host is alive
        shutil.rmtree(os.path.join(top, name), ignore_errors=True)  # never follows a link
        removed += 1
    with contextlib.suppress(OSError):
        removed += remove_stale_cgroups()
    return removed


def _cell_result(message: dict[str, Any], seconds: float) -> CellResult:
    return CellResult(message["output"], message["error"], seconds, message["final"])


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


class _CellClock:
    """One deadline for a cell, spent only while the host waits on the worker."""

    def __init__(self, seconds: float) -> None:
        self.left = seconds

    async def wait(self, awaitable: Awaitable[Any]) -> Any:
        started = time.perf_counter()
        try:
            return await asyncio.wait_for(awaitable, max(self.left, 0.0))
        finally:
            self.left -= time.perf_counter() - started


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
        self._context_file: IO[bytes] | None = None
        self._context_kind = "str"
        self._stderr: IO[bytes] | None = None
        self._cgroup: SandboxCgroup | None = None
        self._proc: asyncio.subprocess.Process | None = None
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
        uid = sandbox_uid() if method != "none" and os.geteuid() == 0 else None
        self._launch = build_launch(
            method,
            worker_command(),
            workdir=self._dir,
            uid=uid,
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
        if self._cgroup is not None:
            argv = self._cgroup.wrap(argv)
        if self._stderr is not None:
            self._stderr.close()
        # The worker's stderr: a file with no name, so nothing the worker does to its
        # directory can point the host's reads at another file.
        self._stderr = tempfile.TemporaryFile()
        context_fd = self._context_file.fileno()
        self._proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=self._stderr,
            cwd=self._dir if self._launch.method == "none" else "/",
            env={**clean_environment(self._dir), **self._launch.env},
            start_new_session=True,  # its own process group, so a kill takes its children too
            close_fds=True,
            pass_fds=(context_fd,),
        )
        init = init_frame(
            self._launch,
            context_fd=context_fd,
            context_kind=self._context_kind,
            rlimits=limits,
            subcalls=self._subcalls_enabled,
        )
        try:
            await asyncio.wait_for(self._send(init), self.start_timeout)
            ready = await asyncio.wait_for(self._receive(("ready",)), self.start_timeout)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ProtocolError) as exc:
            detail = await self._kill(grace=1.0)
            raise REPLError(f"the REPL worker did not start: {detail or exc!r}") from exc
        if "error" in ready:
            await self._kill()
            raise REPLError(f"the REPL worker could not start: {ready['error']}")

    async def _send(self, message: dict[str, Any]) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        if isinstance(message.get("result"), list) and len(message["result"]) > 256:
            data = await asyncio.to_thread(pack, message)  # a long map's answers, item by item
        else:
            data = pack(message)
        self._proc.stdin.write(data)
        await self._proc.stdin.drain()

    async def _receive(self, expected: Collection[str]) -> dict[str, Any]:
        """The next message, checked. Generated code can write to the protocol pipe too:
        every size, count and shape here is the other side's choice."""
        assert self._proc is not None and self._proc.stdout is not None
        stdout = self._proc.stdout
        size = header_size(await stdout.readexactly(LENGTH.size))
        header, count = parse_header(await stdout.readexactly(size))
        limit = self.limits.max_message_mb * 1024 * 1024
        parts: list[bytes] = []
        total = 0
        for index in range(count):
            (size,) = LENGTH.unpack(await stdout.readexactly(LENGTH.size))
            total += size
            if total > limit:
                raise ProtocolError(f"a message of over {self.limits.max_message_mb} MB")
            parts.append(await stdout.readexactly(size))
            if index % 512 == 511:
                await asyncio.sleep(0)  # buffered parts are read without a pause: make one
        if total > _BIG_MESSAGE or count > 512:
            texts = await asyncio.to_thread(decode_parts, parts)
        else:
            texts = decode_parts(parts)
        return check_message(attach_parts(header, texts), expected)

    async def run_cell(self, code: str) -> CellResult:
        """Run `code` in the worker; errors in the code come back as output, never raise."""
        if self._proc is None:
            await self.start()
        started = time.perf_counter()
        clock = _CellClock(self.cell_timeout)
        try:
            await clock.wait(self._send({"op": "exec", "code": code}))
            while True:
                message = await clock.wait(self._receive(_IN_CELL))
                if message["op"] == "result":
                    return _cell_result(message, time.perf_counter() - started)
                reply = await self._serve(message)  # the host's own time: off the clock
                await clock.wait(self._send(reply))
        except TimeoutError:
            reason = f"the cell ran longer than its {self.cell_timeout:g} s limit and was stopped"
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
        if self._proc is None:
            return None
        clock = _CellClock(self.cell_timeout)
        try:
            await clock.wait(self._send({"op": "variable", "name": name}))
            reply = await clock.wait(self._receive(("variable",)))
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, ProtocolError):
            await self._kill()
            await self._restart()
            return None
        value = reply.get("value")
        return value if reply["found"] and isinstance(value, str) else None

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
        if proc is None:
            return ""
        if grace and proc.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), grace)
        stopped_here = proc.returncode is None
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
        # A worker that died mid-write can leave the reader paused on a full buffer; then the
        # pipe's end is never seen and wait() never returns. Its output is of no use now.
        with contextlib.suppress(AttributeError):
            proc._transport.get_pipe_transport(1).close()  # type: ignore[attr-defined]
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
        tail = await asyncio.to_thread(self._stderr_tail)
        if tail:
            detail.append(tail)
        return "; ".join(detail)

    def _stderr_tail(self, limit: int = 400) -> str:
        """The last line of what the worker wrote to stderr, from the host's own handle."""
        if self._stderr is None:
            return ""
        fd = self._stderr.fileno()
        try:
            size = os.fstat(fd).st_size
            text = os.pread(fd, limit, max(0, size - limit)).decode("utf-8", "replace")
        except OSError:
            return ""
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return lines[-1] if lines else ""

    async def close(self) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(Exception):
                await self._send({"op": "exit"})
                await asyncio.wait_for(proc.wait(), 1.0)
        await self._kill()
        for handle in (self._stderr, self._context_file):
            if handle is not None:
                handle.close()
        self._stderr = self._context_file = None
        if self._cgroup is not None:
            await asyncio.to_thread(self._cgroup.remove)
            self._cgroup = None
        if self._dir is not None:
            await asyncio.to_thread(shutil.rmtree, self._dir, True)
            self._dir = None
