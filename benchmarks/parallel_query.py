"""Benchmark: parallel_query of N chunks at concurrency k against a loopback LLM server.

Prints wall time over the ideal ceil(N/k) x latency, the speed-up over sequential calls, and
the host CPU spent per sub-call next to what a bare SDK call costs. The LLM server runs in its
own process so its CPU does not count against the host.

    python benchmarks/parallel_query.py [--n 1000] [--k 16] [--latency 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import subprocess
import sys
import time
from pathlib import Path

import openai

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rlm import RLM, CodeExecuted, Event, OpenAIInterface  # noqa: E402


def start_server(latency: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "fake_llm.py"), "--latency", str(latency)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if line[:1] != ["PORT"]:
        proc.kill()
        raise SystemExit("the fake LLM server did not start")
    return proc, f"http://127.0.0.1:{line[1]}/v1"


async def bare_sdk(base_url: str, n: int, k: int) -> tuple[float, float]:
    """(wall seconds, host CPU seconds) for n bare AsyncOpenAI calls, k at a time."""
    client = openai.AsyncOpenAI(api_key="bench", base_url=base_url, max_retries=0)
    gate = asyncio.Semaphore(k)

    async def one(i: int) -> None:
        async with gate:
            await client.chat.completions.create(
                model="sub-model", messages=[{"role": "user", "content": f"chunk {i}"}]
            )

    await one(-1)  # connect once, outside the measurement
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    result = time.perf_counter() - wall, time.process_time() - cpu
    await client.close()
    return result


async def through_rlm(base_url: str, n: int, k: int) -> tuple[float, float]:
    """(cell wall seconds, host CPU seconds) for one parallel_query of n chunks in the REPL."""
    code = (
        f"chunks = ['chunk ' + str(i) for i in range({n})]\n"
        "out = parallel_query('Summarise: {chunk}', chunks)\n"
        "print(len(out), sum(o.startswith('Error') for o in out))"
    )
    reply = f"```repl\n{code}\n```\nFINAL_VAR(out)"
    root = OpenAIInterface("root-model", api_key="bench", base_url=base_url)
    sub = OpenAIInterface("sub-model", api_key="bench", base_url=base_url, max_retries=0)
    await sub.query_async("warm up")
    root_script = ScriptedRoot(reply)
    cells: list[CodeExecuted] = []
    cpu_marks: list[float] = []

    def on_event(event: Event) -> None:
        if isinstance(event, CodeExecuted):
            cells.append(event)
            cpu_marks.append(time.process_time())

    engine = RLM(root_script, sub, max_parallel_calls=k, max_iterations=1)
    cpu = time.process_time()
    await engine.query_async("bench", "context", on_event=on_event)
    await root.aclose()
    await sub.aclose()
    output = cells[0].output.split()
    if output != [str(n), "0"]:
        raise SystemExit(f"unexpected cell output: {cells[0].output!r}")
    return cells[0].seconds, cpu_marks[0] - cpu


class ScriptedRoot(OpenAIInterface):
    """The root model's one reply, without a network round trip, so only sub-calls are timed."""

    def __init__(self, reply: str) -> None:
        super().__init__("root-model", api_key="bench")
        self.reply = reply

    async def chat_async(self, messages):  # type: ignore[no-untyped-def,override]
        from rlm import Completion

        return Completion(self.reply)


async def sequential_per_call(base_url: str, samples: int) -> float:
    sub = OpenAIInterface("sub-model", api_key="bench", base_url=base_url)
    await sub.query_async("warm up")
    started = time.perf_counter()
    for i in range(samples):
        await sub.query_async(f"chunk {i}")
    await sub.aclose()
    return (time.perf_counter() - started) / samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--repeat", type=int, default=3, help="runs; the best is reported")
    args = parser.parse_args()
    server, base_url = start_server(args.latency)
    try:
        per_call = asyncio.run(sequential_per_call(base_url, 20))
        rlm_runs = [asyncio.run(through_rlm(base_url, args.n, args.k)) for _ in range(args.repeat)]
        bare_runs = [asyncio.run(bare_sdk(base_url, args.n, args.k)) for _ in range(args.repeat)]
    finally:
        server.terminate()
        server.wait()
    ideal = math.ceil(args.n / args.k) * args.latency
    wall = min(w for w, _ in rlm_runs)
    bare_wall = min(w for w, _ in bare_runs)
    rlm_cpu_ms = 1000 * min(c for _, c in rlm_runs) / args.n
    bare_cpu_ms = 1000 * min(c for _, c in bare_runs) / args.n
    print(f"parallel_query: N={args.n} chunks, k={args.k}, latency {args.latency * 1000:.0f} ms")
    print(f"  ideal ceil(N/k) x latency     {ideal:8.3f} s")
    print(f"  rlm parallel_query wall       {wall:8.3f} s   ratio {wall / ideal:.3f}x")
    print(f"  bare SDK, same concurrency    {bare_wall:8.3f} s   ratio {bare_wall / ideal:.3f}x")
    print(
        f"  sequential (measured per call {per_call * 1000:.1f} ms) "
        f"{per_call * args.n:8.1f} s   speed-up {per_call * args.n / wall:.1f}x"
    )
    print(
        f"  host CPU per sub-call: rlm {rlm_cpu_ms:.2f} ms, bare SDK {bare_cpu_ms:.2f} ms, "
        f"ratio {rlm_cpu_ms / bare_cpu_ms:.2f}x"
    )


if __name__ == "__main__":
    main()
