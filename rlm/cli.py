"""The `rlm` command: ask a question over local text files from a terminal."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from rlm._core import RLM, write_trajectory_jsonl
from rlm._events import Event, IterationFinished, IterationStarted, RunFinished, SubcallProgress
from rlm._exceptions import RLMError
from rlm._pricing import format_cost, load_prices_file
from rlm._prompts import PROMPT_MODES
from rlm.clients import interface_from_spec

_SKIPPED_DIRS = {".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv", "venv"}


class UsageError(Exception):
    """Bad input on the command line: printed as one line, exit status 2."""


def _looks_binary(data: bytes) -> bool:
    return b"\0" in data[:8192]


def _files_under(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise UsageError(f"{path}: no such file or directory")
    found = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS and not d.startswith("."))
        found += [Path(root, f) for f in sorted(files) if not f.startswith(".")]
    return found


def read_context(paths: Sequence[str]) -> list[str]:
    """One string per readable text file, headed by its path; binary files are skipped."""
    documents = []
    for given in paths:
        for path in _files_under(Path(given)):
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise UsageError(f"{path}: cannot read it ({exc.strerror})") from exc
            if _looks_binary(data):
                if path.samefile(given):
                    raise UsageError(f"{path}: looks like a binary file, not text")
                continue
            text = data.decode("utf-8", errors="replace")
            documents.append(f"=== {path} ===\n{text}")
    if not documents:
        raise UsageError("no text files found in " + ", ".join(paths))
    return documents


class Progress:
    """A one-line live progress display on a terminal; plain lines otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.live = out.isatty()
        self.started = time.perf_counter()
        self.iteration = 0
        self.subcalls = 0  # in finished iterations
        self.in_iteration = 0  # sub-calls finished so far in the current one
        self.map: tuple[int, int] | None = None
        self.last_draw = 0.0

    def __call__(self, event: Event) -> None:
        if isinstance(event, IterationStarted):
            self.iteration, self.map, self.in_iteration = event.iteration, None, 0
        elif isinstance(event, SubcallProgress):
            self.map = (event.done, event.total)
            self.in_iteration += 1
            if time.perf_counter() - self.last_draw < 0.1 and event.done < event.total:
                return
        elif isinstance(event, IterationFinished):
            self.subcalls += event.subcalls
            self.in_iteration = 0
            if not self.live:
                self.out.write(
                    f"iteration {event.iteration}: {event.subcalls} sub-calls, "
                    f"{event.seconds:.1f} s\n"
                )
        elif isinstance(event, RunFinished):
            if self.live:
                self.out.write("\r\x1b[2K")
            self.out.write(summary(event) + "\n")
            self.out.flush()
            return
        if self.live:
            self.draw()

    def draw(self) -> None:
        self.last_draw = time.perf_counter()
        parts = [f"iteration {self.iteration}", f"{self.subcalls + self.in_iteration} sub-calls"]
        if self.map is not None:
            done, total = self.map
            filled = int(20 * done / total) if total else 20
            parts.insert(1, f"[{'#' * filled}{'.' * (20 - filled)}] {done}/{total}")
        parts.append(f"{time.perf_counter() - self.started:.1f} s")
        self.out.write("\r\x1b[2K" + "  ".join(parts))
        self.out.flush()


def summary(event: RunFinished) -> str:
    """The run's one-line summary on stderr: steps, sub-calls, tokens, money, time."""
    tokens = event.input_tokens + event.output_tokens
    cached = f" ({event.cached_input_tokens:,} input cached)" if event.cached_input_tokens else ""
    stopped = f" · stopped by {event.stopped_by}" if event.stopped_by else ""
    return (
        f"{event.iterations} iteration{'s' if event.iterations != 1 else ''} · "
        f"{event.subcalls:,} sub-calls · {tokens:,} tokens{cached} · "
        f"cost {format_cost(event.cost)} · {event.seconds:.1f} s{stopped}"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlm", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    ask = commands.add_parser("ask", help="answer a question over text files")
    ask.add_argument("question")
    ask.add_argument("paths", nargs="+", metavar="FILE_OR_DIR")
    ask.add_argument("--root", default="openai:gpt-4o", help="root model, provider:model")
    ask.add_argument("--sub", default="openai:gpt-4o-mini", help="sub-model, provider:model")
    ask.add_argument("--parallel", type=int, default=10, help="sub-calls in flight at once")
    ask.add_argument("--mode", choices=PROMPT_MODES, default="standard")
    ask.add_argument("--max-iterations", type=int, default=20)
    ask.add_argument("--trajectory", metavar="OUT.jsonl", help="write the trajectory here")
    ask.add_argument("--max-cost", type=float, metavar="USD", help="stop the run at this cost")
    ask.add_argument(
        "--prices",
        metavar="FILE",
        help='prices over the shipped table: JSON or TOML, {"provider:model": {"input": '
        '2.5, "cached_input": 1.25, "output": 10}} in dollars per million tokens',
    )
    ask.add_argument("--verbose", action="store_true", help="print every iteration in full")
    return parser


async def _ask(args: argparse.Namespace) -> str:
    if args.parallel < 1:
        raise UsageError("--parallel must be at least 1")
    context = read_context(args.paths)
    prices = load_prices_file(args.prices) if args.prices else None
    root = interface_from_spec(args.root)
    sub = interface_from_spec(args.sub)
    engine = RLM(
        root,
        sub,
        max_parallel_calls=args.parallel,
        prompt_mode=args.mode,
        max_iterations=args.max_iterations,
        max_cost=args.max_cost,
        prices=prices,
    )
    try:
        answer, trajectory = await engine.query_async(
            args.question, context, verbose=args.verbose, on_event=Progress(sys.stderr)
        )
    finally:
        await root.aclose()
        await sub.aclose()
    if args.trajectory:
        write_trajectory_jsonl(trajectory, args.trajectory)
    return answer


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        answer = asyncio.run(_ask(args))
    except (UsageError, RLMError, OSError) as exc:
        print(f"rlm: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rlm: interrupted", file=sys.stderr)
        return 130
    print(answer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
