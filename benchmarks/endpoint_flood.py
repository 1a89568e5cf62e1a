"""Strangers flooding /slack/events: does Slack still get its ack in time?

Runs the real app in HTTP mode in this process (SQLite, the loopback Slack and LLM servers
from tests/), then, phase by phase, a load generator in a child process floods the endpoint
on loopback while this process sends signed `/rlm help` commands (10 a second) and times
their acks. Phases (each `--seconds`, every request counted and bounded):

- baseline: no flood;
- 1,000 req/s of malformed JSON without signature headers;
- 1,000 req/s of malformed JSON with a forged signature (the body is read and HMAC'd);
- 50 req/s of 700 KB bodies without signature headers;
- 50 req/s of 700 KB bodies with a forged signature.

Prints, per phase, what the generator achieved (requests, rate, answers by status), the
signed acks' p50, p99 and max (Slack's deadline is 3 s; the target p99 is under 1 s), and how
much the app's log grew (bytes, at INFO, in the production format).

    .venv/bin/python benchmarks/endpoint_flood.py [--seconds 10] [--rate 1000] [--big-rate 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

BIG_BYTES = 700_000
PROBES_PER_SECOND = 10
MAX_IN_FLIGHT = 256  # the generator's connections: open-loop, but bounded


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


# -- the load generator (child process) -------------------------------------------------------


async def generate(url: str, kind: str, rate: float, seconds: float) -> dict[str, object]:
    """Send `rate` requests a second for `seconds` (open-loop: on schedule, at most
    MAX_IN_FLIGHT at once) and count the answers."""
    import aiohttp

    small = b'{"type": "event_callback", "event": {"type": "app_mention", ' * 4  # not JSON
    body = (b'{"padding": "' + b"x" * BIG_BYTES + b'"') if kind.startswith("big") else small
    forged = kind.endswith("forged")
    statuses: Counter[str] = Counter()
    gate = asyncio.Semaphore(MAX_IN_FLIGHT)
    total = int(rate * seconds)

    async def one(session: aiohttp.ClientSession) -> None:
        headers = {"Content-Type": "application/json"}
        if forged:
            headers |= {
                "X-Slack-Request-Timestamp": str(int(time.time())),
                "X-Slack-Signature": "v0=" + "0" * 64,
            }
        try:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                statuses[str(response.status)] += 1
        except (aiohttp.ClientError, TimeoutError) as exc:
            statuses[type(exc).__name__] += 1
        finally:
            gate.release()

    timeout = aiohttp.ClientTimeout(total=10)
    connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT)
    tasks = []
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        started = time.perf_counter()
        for i in range(total):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await gate.acquire()
            tasks.append(asyncio.create_task(one(session)))
        sent_in = time.perf_counter() - started
        await asyncio.gather(*tasks)
    return {"sent": total, "seconds": sent_in, "statuses": dict(statuses)}


# -- the app and the probes (this process) ----------------------------------------------------


def size_of(path: Path) -> int:
    return path.stat().st_size


async def probe(events: object, seconds: float) -> list[float]:
    """Signed `/rlm help` commands, PROBES_PER_SECOND for `seconds`; their ack latencies."""
    latencies: list[float] = []
    failures = 0

    async def once() -> None:
        nonlocal failures
        reply = await events.command("help")  # type: ignore[attr-defined]
        if reply.status == 200:
            latencies.append(reply.seconds)
        else:
            failures += 1

    tasks = []
    started = time.perf_counter()
    for i in range(int(seconds * PROBES_PER_SECOND)):
        delay = started + i / PROBES_PER_SECOND - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(once()))
    await asyncio.gather(*tasks)
    if failures:
        print(f"    {failures} signed probe(s) not answered 200")
    return latencies


async def phase(name: str, bot: object, kind: str | None, rate: float, args, log: Path) -> None:
    url = bot.http.url  # type: ignore[attr-defined]
    before = size_of(log)
    child = None
    if kind is not None:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--generate",
            url,
            kind,
            str(rate),
            str(args.seconds),
            stdout=asyncio.subprocess.PIPE,
        )
        await asyncio.sleep(0.5)  # let the flood start before the first probe
    latencies = await probe(bot.events, args.seconds)  # type: ignore[attr-defined]
    load = ""
    if child is not None:
        out, _ = await asyncio.wait_for(child.communicate(), args.seconds + 60)
        report = json.loads(out)
        load = (
            f"{report['sent']} sent at {report['sent'] / report['seconds']:.0f}/s, "
            f"answers {report['statuses']}; "
        )
    grown = size_of(log) - before
    over = sum(1 for x in latencies if x > 1.0)
    print(
        f"{name}: {load}signed acks p50 {percentile(latencies, 0.5) * 1000:.1f} ms, "
        f"p99 {percentile(latencies, 0.99) * 1000:.1f} ms, "
        f"max {max(latencies, default=0) * 1000:.1f} ms, over 1 s: {over}/{len(latencies)}; "
        f"log grew {grown} bytes"
    )


async def main(args: argparse.Namespace) -> int:
    from bot_harness import BotHarness, harness_settings
    from fake_llm import FakeLLMServer
    from slack_server import SlackServer

    with SlackServer() as slack, FakeLLMServer() as llm, tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "app.log"
        handler = logging.FileHandler(log)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)
        settings = harness_settings(
            slack_api_url=slack.api_url,
            openai_base_url=llm.openai_base_url,
            database_url=f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}",
            rlm_log_level="INFO",
        )
        bot = await BotHarness(settings, response_base=slack.url).start()
        try:
            await bot.events.command("help")  # type: ignore[union-attr]  # warm up
            print(f"{args.seconds:.0f} s a phase, {PROBES_PER_SECOND} signed probes a second")
            await phase("baseline (no flood)", bot, None, 0, args, log)
            for kind, rate, name in (
                ("small", args.rate, f"{args.rate:.0f}/s unsigned malformed JSON"),
                ("small-forged", args.rate, f"{args.rate:.0f}/s forged-signature malformed JSON"),
                ("big", args.big_rate, f"{args.big_rate:.0f}/s unsigned 700 KB bodies"),
                ("big-forged", args.big_rate, f"{args.big_rate:.0f}/s forged-signature 700 KB"),
            ):
                await phase(name, bot, kind, rate, args, log)
            print(f"requests by outcome: {dict(bot.http.stats.counts)}")  # type: ignore[union-attr]
        finally:
            await bot.close()
            logging.getLogger().removeHandler(handler)
            handler.close()
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--generate":
        _, _, url, kind, rate, seconds = sys.argv
        assert url.startswith("http://127.0.0.1:"), "loopback only"
        print(json.dumps(asyncio.run(generate(url, kind, float(rate), float(seconds)))))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--big-rate", type=float, default=50.0)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(asyncio.run(main(parser.parse_args())))
