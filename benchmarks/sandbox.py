"""Benchmark: what the REPL sandbox contains and what it costs.

Prints the attacks tried and contained (the cells of tests/security/attacks.py, run under the
isolation this machine chooses), how many files the worker can see (walked from inside it,
against the whole host's count), the worker's start time (spawn to ready) with and without
isolation, and the slowdown isolation adds to one parallel_query of N chunks, served by an
in-process handler so only the worker's side and the pipe are measured.

    python benchmarks/sandbox.py [--starts 20] [--n 1000] [--chunk 4000] [--repeat 15]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fake_llm import FakeLLMServer  # noqa: E402

from rlm.repl import REPLSession, SandboxLimits  # noqa: E402
from rlm.repl._sandbox import choose_method, probe  # noqa: E402
from tests.security.attacks import (  # noqa: E402
    ATTACKS,
    SECRETS,
    attack_session,
    attack_target,
)
from tests.security.views import WALK_CELL, walked  # noqa: E402


async def run_attacks(method: str) -> tuple[int, int, list[str]]:
    """(tried, contained, what got through) for every attack, isolated by `method`."""
    project = Path(tempfile.mkdtemp(prefix="rlm-bench-project-"))
    home = os.getcwd()
    os.chdir(project)
    os.environ["OPENAI_API_KEY"], os.environ["SLACK_BOT_TOKEN"] = SECRETS[:2]
    tried = contained = 0
    failures: list[str] = []
    try:
        with FakeLLMServer() as server, attack_target(project, server.port) as target:
            for attack in ATTACKS:
                if method == "none" and attack.needs_isolation:
                    continue  # unsafe or pointless to try without a sandbox
                tried += 1
                async with attack_session(method, attack.cell_timeout) as session:
                    result = await session.run_cell(attack.code(target))
                    problem = attack.check(result, target)
                    after = await session.run_cell("print('alive')")
                if not problem and after.output != "alive\n":
                    problem = "the session did not go on"
                if problem:
                    failures.append(f"{attack.name}: {problem}")
                else:
                    contained += 1
                print(f"  {attack.name:24} {'contained' if not problem else 'GOT THROUGH'}")
            if server.requests:
                failures.append("the LLM server received requests from sandboxed code")
    finally:
        os.chdir(home)
        shutil.rmtree(project)
    return tried, contained, failures


async def _answer(prompt: str) -> str:
    return prompt


async def _map(template: str, chunks: list[str]) -> list[str]:
    return [template.replace("{chunk}", c) for c in chunks]


def _session(method: str) -> REPLSession:
    return REPLSession(
        "context",
        llm_query=_answer,
        parallel_query=_map,
        limits=SandboxLimits(isolation=method),
    )


async def visible_files(method: str) -> int:
    """How many files (not directories) a worker isolated by `method` can list."""
    async with _session(method) as session:
        result = await session.run_cell(WALK_CELL)
    if result.error:
        raise SystemExit(f"the walking cell failed: {result.output[-500:]}")
    return walked(result.output)[1]


def host_files() -> int:
    """Files this process could list on the host (/proc, /sys and /dev left out)."""
    count = 0
    for top, dirs, files in os.walk("/"):
        if top == "/":
            dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev")]
        count += len(files)
    return count


async def start_times(method: str, runs: int) -> list[float]:
    times = []
    for _ in range(runs + 1):  # the first one warms caches and is dropped
        session = _session(method)
        started = time.perf_counter()
        await session.start()
        times.append(time.perf_counter() - started)
        await session.close()
    return times[1:]


async def paired_parallel_query_times(
    method: str, n: int, chunk: int, repeat: int
) -> tuple[list[float], list[float]]:
    """(unisolated, isolated) times of the same parallel_query, the runs taken in turn so
    that drift in the machine's load falls on both alike."""
    code = (
        f"out = parallel_query('Summarise: {{chunk}}', chunks)\n"
        f"assert len(out) == {n} and out[-1].endswith('{n - 1}')"
    )
    setup = f"chunks = ['x' * {chunk - 8} + str(i).rjust(8) for i in range({n})]"
    times: tuple[list[float], list[float]] = ([], [])
    async with _session("none") as plain, _session(method) as boxed:
        for session in (plain, boxed):
            await session.run_cell(setup)
            await session.run_cell(code)  # warm up
        for _ in range(repeat):
            for session, into in ((plain, times[0]), (boxed, times[1])):
                result = await session.run_cell(code)
                if result.error:
                    raise SystemExit(f"the benchmark cell failed: {result.output}")
                into.append(result.seconds)
    return times


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f} ms"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=20, help="worker starts per method")
    parser.add_argument("--n", type=int, default=1000, help="chunks in the parallel_query")
    parser.add_argument("--chunk", type=int, default=4000, help="characters per chunk")
    parser.add_argument("--repeat", type=int, default=15, help="parallel_query runs per method")
    args = parser.parse_args()

    method, error = choose_method("auto", False)
    available = [m for m in ("bwrap", "unshare") if not probe(m)]
    print(f"isolation chosen here: {method}; available: {', '.join(available) or 'none'}")
    if error:
        raise SystemExit(error)

    print(f"\nattacks, isolated with {method}:")
    tried, contained, failures = await run_attacks(method)
    print(f"attacks tried {tried}, contained {contained}")
    for failure in failures:
        print(f"  GOT THROUGH {failure}")

    print("\nfiles the worker can see (walked from inside it, /proc left out):")
    print(f"  host        {host_files():7d}")
    for wrapper in available:
        print(f"  {wrapper:10}  {await visible_files(wrapper):7d}")

    print(f"\nworker start, spawn to ready, median of {args.starts}:")
    base = statistics.median(await start_times("none", args.starts))
    print(f"  none        {ms(base)}")
    for wrapper in available:
        median = statistics.median(await start_times(wrapper, args.starts))
        print(f"  {wrapper:10}  {ms(median)}   added {ms(median - base).strip()}")

    size_mb = args.n * args.chunk / 1e6
    print(
        f"\nparallel_query of {args.n} chunks ({size_mb:.0f} MB), median of {args.repeat}, "
        "each isolated run taken in turn with an unisolated one:"
    )
    for wrapper in available:
        plain, boxed = await paired_parallel_query_times(wrapper, args.n, args.chunk, args.repeat)
        base, median = statistics.median(plain), statistics.median(boxed)
        print(
            f"  {wrapper:10}  {ms(median)} against {ms(base).strip()}   "
            f"slowdown {100 * (median / base - 1):+.1f}%"
        )


if __name__ == "__main__":
    asyncio.run(main())
