"""The REPL worker: a fresh interpreter that runs the root model's code.

Started by `rlm.repl._host` as `python -I -S _worker.py` (the base interpreter, no venv),
usually inside a sandbox wrapper (see `_sandbox.py`); it imports nothing from `rlm` so it
starts fast and carries nothing of the host. It speaks length-prefixed JSON frames over the
stdin/stdout it was given, which it moves off fds 0 and 1 first so generated code cannot write
into the protocol. Before it loads the context it confines itself as the init message says:
builds its own root under unshare (`_rootfs.py`), sets its resource limits, drops privileges.
`llm_query` and `parallel_query` are requests to the host.
"""

from __future__ import annotations

import ast
import io
import json
import os
import resource
import signal
import sys
import threading
import traceback
from typing import Any

# Characters kept of one cell's output unless the host says otherwise: a courtesy that keeps
# frames small. The host holds the real cap, whatever a cell changes here.
_OUTPUT_CAP = 1_000_000


class _Channel:
    """Messages to and from the host, in `_protocol`'s wire form."""

    def __init__(self, read_fd: int, write_fd: int, protocol: Any) -> None:
        self._reader = os.fdopen(read_fd, "rb", buffering=0)
        self._writer = os.fdopen(write_fd, "wb", buffering=0)
        self._protocol = protocol
        self.max_parts: int = protocol.MAX_PARTS
        self._lock = threading.Lock()

    def _read_exactly(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            piece = self._reader.read(n - len(buf))
            if not piece:
                raise EOFError("host closed the pipe")
            buf += piece
        return bytes(buf)

    def receive(self) -> dict[str, Any]:
        message: dict[str, Any] = self._protocol.read_message(self._read_exactly, 1 << 40)
        return message

    def send(self, message: dict[str, Any]) -> None:
        for piece in self._protocol.pack_pieces(message):  # a long answer is not copied whole
            self._writer.write(piece)

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        with self._lock:  # one request in flight; parallel_query is the way to fan out
            self.send(message)
            return self.receive()


class _CappedOutput(io.TextIOBase):
    """Collects printed text, keeping the first `cap` characters and counting the rest."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.parts: list[str] = []
        self.kept = 0
        self.dropped = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        room = self.cap - self.kept
        if room > 0:
            piece = text[:room]
            self.parts.append(piece)
            self.kept += len(piece)
        self.dropped += max(0, len(text) - max(room, 0))
        return len(text)

    def text(self) -> str:
        out = "".join(self.parts)
        if self.dropped:
            out += f"\n[worker dropped {self.dropped} more characters of output]"
        return out


class _Final(Exception):
    """Raised by FINAL()/FINAL_VAR() called inside code, to stop the cell there."""


def _apply_limits(limits: dict[str, int]) -> None:
    for name, value in limits.items():
        kind = getattr(resource, name)
        _, hard = resource.getrlimit(kind)
        cap = value if hard == resource.RLIM_INFINITY else min(value, hard)
        # Past the CPU soft limit comes SIGXCPU, which names the cause; SIGKILL only if ignored.
        roomy = hard == resource.RLIM_INFINITY or cap + 5 <= hard
        ceiling = cap + 5 if name == "RLIMIT_CPU" and roomy else cap
        resource.setrlimit(kind, (cap, ceiling))
    # Past the file size limit a write fails with EFBIG rather than killing the worker.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


# -- confinement: runs before the context is loaded and before any generated code -------------

_PR_SET_PDEATHSIG, _PR_SET_NO_NEW_PRIVS, _PR_SET_CHILD_SUBREAPER = 1, 38, 36


def confine(spec: dict[str, Any], limits: dict[str, int]) -> list[str]:
    """Apply what the host asked for, in the order that keeps each step possible; returns
    the layers that this kernel could not give (the others hold)."""
    missing: list[str] = []
    rootfs = _load_sibling("_rootfs")  # the file is bound at the same path in the new root
    libc = rootfs.Libc()
    if spec.get("entries"):
        rootfs.build_root(libc, spec)
        rootfs.reopen_null((0, 1, sys.stdin.fileno()))  # theirs was the old root's
    sys.path.extend(spec.get("sys_path", []))  # the packages the operator named
    if spec.get("workdir"):
        os.chdir(spec["workdir"])  # relative paths land in the worker's own directory
    _apply_limits(limits)
    uid = spec.get("uid")
    if uid is not None and os.getuid() == 0:
        # Root ignores RLIMIT_NPROC and owns the host's files: become a uid of our own.
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    if spec.get("drop_caps"):
        rootfs.drop_capabilities(libc)
    libc.check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1), "no_new_privs")
    if spec.get("pdeathsig"):  # unisolated: die with the host, not outlive it
        libc.check(libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL), "pdeathsig")
        # and adopt the orphans of the code's own children, so the host finds them among
        # this process's descendants at a cell's end
        libc.check(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1), "child_subreaper")
    try:
        _load_sibling("_seccomp").install_filter()
    except (ImportError, OSError) as exc:
        missing.append(f"seccomp filter ({exc})")
    return missing


def _load_sibling(name: str) -> Any:
    """A module from the file beside this one (bound into the sandbox with it); `-I` keeps
    this directory off sys.path."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), name + ".py")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"no module at {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _reap() -> None:
    """Collect children that have ended (the host kills what a cell started while this process
    is stopped), so that none is left a zombie holding a slot of the process limit. Nothing
    depends on this: a zombie is dead already."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return  # no children left
        if pid == 0:
            return  # the rest are alive


def _run_as_init() -> None:
    """As PID 1 of a new namespace, stay behind as its reaper and run the worker in a child.

    PID 1 ignores signals it has no handler for and inherits every orphan; the child dies of
    signals like any process, and this one reports that as exit status 128 + signal.
    """
    child = os.fork()
    if child == 0:
        return
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # the context's file too: only stderr stays
    while True:
        pid, status = os.wait()
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            os._exit(128 - code if code < 0 else code)


def _load_context(fd: int, kind: str) -> Any:
    """Read the context from the file the host holds open for us; it has no path here."""
    os.lseek(fd, 0, os.SEEK_SET)
    with open(fd, encoding="utf-8", closefd=True) as f:
        if kind == "list":
            return json.load(f)
        return f.read()


class Worker:
    def __init__(self, channel: _Channel, subcalls_enabled: bool) -> None:
        self.channel = channel
        self.subcalls_enabled = subcalls_enabled
        self.final: dict[str, Any] | None = None
        self.output_cap = _OUTPUT_CAP
        self.namespace: dict[str, Any] = {
            "__name__": "__repl__",
            "__builtins__": __builtins__,
            "llm_query": self.llm_query,
            "parallel_query": self.parallel_query,
            "FINAL": self.final_text,
            "FINAL_VAR": self.final_var,
        }

    def _ask(self, message: dict[str, Any]) -> Any:
        if not self.subcalls_enabled:
            raise RuntimeError(
                "sub-calls are disabled in this prompt mode; work with `context` directly"
            )
        reply = self.channel.request(message)
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply["result"]

    def llm_query(self, prompt: str) -> str:
        """Ask the sub-model one question; returns its answer (or "Error: ..." on failure)."""
        result: str = self._ask({"op": "llm_query", "prompt": str(prompt)})
        return result

    def parallel_query(self, prompt_template: str, context_chunks: Any) -> list[str]:
        """One sub-call per chunk, `{chunk}` replaced; answers in input order."""
        if isinstance(context_chunks, str):
            raise TypeError("parallel_query takes a list of chunks, not one string")
        chunks = [str(c) for c in context_chunks]
        if not chunks:
            return []
        if len(chunks) > self.channel.max_parts - 1:
            raise ValueError(
                f"parallel_query takes at most {self.channel.max_parts - 1:,} chunks per call "
                f"(got {len(chunks):,}); split the work into several calls"
            )
        result: list[str] = self._ask(
            {"op": "parallel_query", "template": str(prompt_template), "chunks": chunks}
        )
        return result

    def final_text(self, text: Any) -> None:
        self.final = {"kind": "text", "value": str(text)}
        raise _Final

    def final_var(self, name: Any) -> None:
        self.final = {
            "kind": "var",
            "name": name if isinstance(name, str) else None,
            "value": None if isinstance(name, str) else str(name),
        }
        raise _Final

    def run(self, code: str) -> dict[str, Any]:
        output = _CappedOutput(self.output_cap)
        real_stdout, real_stderr = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = output
        error = False
        self.final = None
        try:
            tree = ast.parse(code, "<repl>", "exec")
            last = tree.body[-1] if tree.body and isinstance(tree.body[-1], ast.Expr) else None
            if last is not None:
                tree.body.pop()
            exec(compile(tree, "<repl>", "exec"), self.namespace)
            if last is not None:
                value = eval(compile(ast.Expression(last.value), "<repl>", "eval"), self.namespace)
                if value is not None:
                    print(repr(value))
        except _Final:
            pass
        except BaseException as exc:  # the model's code may raise anything, SystemExit included
            error = True
            frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == "<repl>"]
            lines = traceback.format_list(frames) + traceback.format_exception_only(type(exc), exc)
            output.write("Traceback (most recent call last):\n" + "".join(lines))
        finally:
            sys.stdout, sys.stderr = real_stdout, real_stderr
        return {"op": "result", "output": output.text(), "error": error, "final": self.final}

    def variable(self, name: str) -> dict[str, Any]:
        if name not in self.namespace or name.startswith("__"):
            return {"op": "variable", "found": False}
        value = self.namespace[name]
        return {
            "op": "variable",
            "found": True,
            "value": value if isinstance(value, str) else str(value),
        }


def main() -> None:
    if os.getpid() == 1:
        _run_as_init()
    # Take the protocol pipes off fds 0/1 so code that writes to them cannot corrupt frames.
    channel = _Channel(os.dup(0), os.dup(1), _load_sibling("_protocol"))
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    sys.stdin = open(os.devnull)

    init = channel.receive()
    spec = init.get("sandbox") or {}
    try:
        missing = confine(spec, init.get("limits", {}))
    except OSError as exc:
        channel.send({"op": "ready", "error": f"the sandbox could not be set up ({exc})"})
        return
    worker = Worker(channel, init.get("subcalls", True))
    worker.output_cap = int(init.get("output_chars", _OUTPUT_CAP))
    try:
        worker.namespace["context"] = _load_context(init["context_fd"], init["context_kind"])
    except MemoryError:
        channel.send(
            {"op": "ready", "error": "the context does not fit in the worker's memory limit"}
        )
        return
    channel.send({"op": "ready", "missing": missing})
    while True:
        try:
            message = channel.receive()
        except EOFError:
            return
        _reap()
        op = message["op"]
        if op == "exec":
            # What the cell starts is the host's to end: it stops this process when the
            # result arrives and kills the rest of the sandbox, whatever the cell changed here.
            channel.send(worker.run(message["code"]))
        elif op == "variable":
            channel.send(worker.variable(message["name"]))
        elif op == "exit":
            return


if __name__ == "__main__":
    main()
