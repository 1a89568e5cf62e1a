"""Benchmark: parallel_query through the SDK path and through the sub-call lane.

One `parallel_query` of N chunks at concurrency k runs in the REPL worker against a loopback
LLM server (50 ms a sub-call) in its own process, so only the host's CPU is counted (this
process's `time.process_time`; the worker and the server are other processes). For each
path it prints the wall time over the ideal ceil(N/k) x latency, host CPU per sub-call and
the speed-up over sequential calls; "bare" is plain aiohttp POSTs under a semaphore, no engine
at all, the floor this machine allows. The rate-limited case runs against a server allowing R
requests a second per key (a token bucket answering 429 with Retry-After) and prints the
rate sustained as a share of R and the share of calls answered 429.

    python benchmarks/parallel_query.py                 # every row
    python benchmarks/parallel_query.py --rows 1000/16  # one row, N/k
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rlm import RLM, CodeExecuted, Completion, Event, Message, OpenAIInterface  # noqa: E402

ROWS = ("1000/16", "5000/128", "20000/256")


class Server:
    """The fake LLM server as a process; its counters over GET /_stats."""

    def __init__(self, latency: float, rate: float | None = None, burst: float = 1.0) -> None:
        command = [sys.executable, str(ROOT / "tests" / "fake_llm.py"), "--latency", str(latency)]
        if rate is not None:
            command += ["--rate", str(rate), "--burst", str(burst)]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        if line[:1] != ["PORT"]:
            self.proc.kill()
            raise SystemExit("the fake LLM server did not start")
        self.url = f"http://127.0.0.1:{line[1]}"

    def stats(self) -> dict[str, int]:
        with urllib.request.urlopen(self.url + "/_stats") as reply:
            stats: dict[str, int] = json.load(reply)
            return stats

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


class ScriptedRoot(OpenAIInterface):
    """The root model's one reply, without a network round trip, so only sub-calls are timed."""

    def __init__(self, reply: str) -> None:
        super().__init__("root-model", api_key="bench")
        self.reply = reply

    async def chat_async(self, messages: Sequence[Message]) -> Completion:
        return Completion(self.reply)


@dataclass
class Run:
    wall: float  # the cell's seconds
    cpu: float  # host CPU seconds over the whole run


async def through_rlm(base_url: str, n: int, k: int, *, lane: bool, key: str = "bench") -> Run:
    code = (
        f"chunks = ['chunk ' + str(i) for i in range({n})]\n"
        "out = parallel_query('Summarise: {chunk}', chunks)\n"
        "print(len(out), sum(o.startswith('Error') for o in out))"
    )
    root = ScriptedRoot(f"```repl\n{code}\n```\nFINAL_VAR(out)")
    sub = OpenAIInterface("sub-model", api_key=key, base_url=base_url, max_retries=8)
    cells: list[CodeExecuted] = []

    def on_event(event: Event) -> None:
        if isinstance(event, CodeExecuted):
            cells.append(event)

    engine = RLM(
        root,
        sub,
        max_parallel_calls=k,
        max_iterations=1,
        max_map_chunks=max(n, 10_000),
        subcall_lane=lane,
    )
    cpu = time.process_time()
    await engine.query_async("bench", "context", on_event=on_event)
    cpu = time.process_time() - cpu
    await sub.aclose()
    if cells[0].output.split() != [str(n), "0"]:
        raise SystemExit(f"unexpected cell output: {cells[0].output!r}")
    return Run(cells[0].seconds, cpu)


async def bare_aiohttp(base_url: str, n: int, k: int) -> Run:
    """The floor: n plain aiohttp POSTs, k at a time, no engine, no REPL, no retries."""
    import aiohttp

    headers = {"Authorization": "Bearer bench", "Content-Type": "application/json"}
    gate = asyncio.Semaphore(k)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=k)) as session:

        async def one(i: int) -> None:
            body = json.dumps(
                {"model": "sub-model", "messages": [{"role": "user", "content": f"chunk {i}"}]}
            )
            async with (
                gate,
                session.post(base_url + "/chat/completions", data=body, headers=headers) as reply,
            ):
                json.loads(await reply.read())

        await one(-1)
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return Run(time.perf_counter() - wall, time.process_time() - cpu)


async def sequential_per_call(base_url: str, samples: int) -> float:
    sub = OpenAIInterface("sub-model", api_key="bench", base_url=base_url)
    await sub.query_async("warm up")
    started = time.perf_counter()
    for i in range(samples):
        await sub.query_async(f"chunk {i}")
    await sub.aclose()
    return (time.perf_counter() - started) / samples


def throughput_rows(args: argparse.Namespace) -> None:
    server = Server(args.latency)
    base_url = server.url + "/v1"
    try:
        per_call = asyncio.run(sequential_per_call(base_url, 20))
        print(f"latency {args.latency * 1000:.0f} ms; sequential sub-call {per_call * 1000:.1f} ms")
        print(
            f"{'N/k':>10} {'path':>5} {'ideal s':>8} {'wall s':>8} {'ratio':>6} "
            f"{'CPU ms/call':>11} {'speed-up':>9}"
        )
        for row in args.rows:
            n, k = (int(x) for x in row.split("/"))
            ideal = math.ceil(n / k) * args.latency
            for path in args.paths:
                runs = [
                    asyncio.run(
                        bare_aiohttp(base_url, n, k)
                        if path == "bare"
                        else through_rlm(base_url, n, k, lane=path == "lane")
                    )
                    for _ in range(args.repeat)
                ]
                walls = sorted(r.wall for r in runs)
                cpu_ms = 1000 * min(r.cpu for r in runs) / n
                spread = f"{walls[0]:.2f}" + (f"-{walls[-1]:.2f}" if len(walls) > 1 else "")
                print(
                    f"{row:>10} {path:>5} {ideal:8.2f} {spread:>8} "
                    f"{walls[0] / ideal:5.2f}x {cpu_ms:11.2f} {per_call * n / walls[0]:8.1f}x",
                    flush=True,
                )
    finally:
        server.stop()


def rate_limited_row(args: argparse.Namespace) -> None:
    rate, n, k = args.rate, args.rate_n, args.rate_k
    print(
        f"rate-limited: R={rate:g}/s per key (burst {args.burst:g}), N={n}, k={k}, "
        f"latency {args.latency * 1000:.0f} ms; ideal N/R = {n / rate:.2f} s"
    )
    for path in [p for p in args.paths if p != "bare"]:
        server = Server(args.latency, rate=rate, burst=args.burst)
        try:
            run = asyncio.run(through_rlm(server.url + "/v1", n, k, lane=path == "lane"))
            stats = server.stats()
        finally:
            server.stop()
        sent = stats["sub"]
        sustained = n / run.wall
        print(
            f"  {path:>5}: {run.wall:6.2f} s, {sustained:6.1f}/s = {sustained / rate:5.1%} of R, "
            f"{stats['throttled']} of {sent} requests answered 429 "
            f"({stats['throttled'] / sent:.1%})",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="*", default=list(ROWS), help="N/k pairs")
    parser.add_argument("--paths", nargs="*", default=["sdk", "lane", "bare"])
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--repeat", type=int, default=2, help="runs per path; best reported")
    parser.add_argument("--rate", type=float, default=200.0, help="R, requests a second")
    parser.add_argument("--burst", type=float, default=50.0, help="a quarter second of R")
    parser.add_argument("--rate-n", type=int, default=3000)
    parser.add_argument("--rate-k", type=int, default=64)
    parser.add_argument("--no-rate", action="store_true", help="skip the rate-limited case")
    args = parser.parse_args()
    if args.rows:
        throughput_rows(args)
    if not args.no_rate:
        rate_limited_row(args)


if __name__ == "__main__":
    main()
