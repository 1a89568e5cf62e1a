"""The REPL worker: a fresh interpreter that runs the root model's code.

Started by `rlm.repl._host` as `python -I _worker.py`; it imports nothing from `rlm` so it
starts fast and carries nothing of the host. It speaks length-prefixed JSON frames over the
stdin/stdout it was given, which it moves off fds 0 and 1 first so generated code cannot
write into the protocol. `llm_query` and `parallel_query` are requests to the host.
"""

from __future__ import annotations

import ast
import io
import json
import os
import resource
import struct
import sys
import threading
import traceback
from typing import Any

_HEADER = struct.Struct(">I")
_OUTPUT_CAP = 1_000_000  # characters kept of one cell's output; the host truncates further


class _Channel:
    def __init__(self, read_fd: int, write_fd: int) -> None:
        self._reader = os.fdopen(read_fd, "rb", buffering=0)
        self._writer = os.fdopen(write_fd, "wb", buffering=0)
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
        (size,) = _HEADER.unpack(self._read_exactly(_HEADER.size))
        message: dict[str, Any] = json.loads(self._read_exactly(size))
        return message

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, ensure_ascii=False).encode("utf-8")
        self._writer.write(_HEADER.pack(len(data)) + data)

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        with self._lock:  # one request in flight; parallel_query is the way to fan out
            self.send(message)
            return self.receive()


class _CappedOutput(io.TextIOBase):
    """Collects printed text, keeping the first `_OUTPUT_CAP` characters and counting the rest."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.kept = 0
        self.dropped = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        room = _OUTPUT_CAP - self.kept
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
        resource.setrlimit(kind, (cap, cap))


def _load_context(path: str, kind: str) -> Any:
    with open(path, encoding="utf-8") as f:
        if kind == "list":
            return json.load(f)
        return f.read()


class Worker:
    def __init__(self, channel: _Channel, subcalls_enabled: bool) -> None:
        self.channel = channel
        self.subcalls_enabled = subcalls_enabled
        self.final: dict[str, Any] | None = None
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
        output = _CappedOutput()
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
            frames = traceback.extract_tb(exc.__traceback__)
            frames = [f for f in frames if f.filename == "<repl>"]
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
    # Take the protocol pipes off fds 0/1 so code that writes to them cannot corrupt frames.
    channel = _Channel(os.dup(0), os.dup(1))
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    sys.stdin = open(os.devnull)

    init = channel.receive()
    _apply_limits(init.get("limits", {}))
    worker = Worker(channel, init.get("subcalls", True))
    try:
        worker.namespace["context"] = _load_context(init["context_path"], init["context_kind"])
    except MemoryError:
        channel.send(
            {"op": "ready", "error": "the context does not fit in the worker's memory limit"}
        )
        return
    channel.send({"op": "ready"})
    while True:
        try:
            message = channel.receive()
        except EOFError:
            return
        op = message["op"]
        if op == "exec":
            channel.send(worker.run(message["code"]))
        elif op == "variable":
            channel.send(worker.variable(message["name"]))
        elif op == "exit":
            return


if __name__ == "__main__":
    main()
