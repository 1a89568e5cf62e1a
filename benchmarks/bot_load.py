"""Load on the Slack app: many questions across workspaces through the signed HTTP endpoint.

Runs the real app against the loopback Slack and LLM servers from tests/ — in this process
on SQLite (--in-process), or as 1 and 3 `rlm-bot` replicas on PostgreSQL and Redis — sends
questions as slash commands and mentions while earlier runs are still in flight, then prints
questions per second, the ack latency (p50, p99; Slack's deadline is 3 s, the target p99 is
under 100 ms) and each workspace's peak sub-calls in flight against its limit; in process, also
the Slack Web API calls per run by method and the posts per channel per minute (with the
production pacing of status edits and posts, unless --unpaced).

By default it runs 1 and then 3 `rlm-bot` processes on one PostgreSQL database and one Redis
(see tests/replica_cluster.py), questions spread over them in turn, and takes the peaks from
the loopback LLM server, which sees every replica's sub-calls. `--in-process` runs the app
in this process on SQLite instead, with the peaks from its limiters.

    .venv/bin/python benchmarks/bot_load.py [--replicas 1,3] [--questions 50] [--limit 4]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from bot_harness import MAP_EVERY_LINE, BotHarness, harness_settings, mention
from fake_llm import FakeLLMServer
from slack_server import BOT_USER, SlackServer


def peak_per_minute(times: list[float]) -> int:
    """The most posts in any 60-second window."""
    times = sorted(times)
    best = start = 0
    for end, at in enumerate(times):
        while at - times[start] > 60:
            start += 1
        best = max(best, end - start + 1)
    return best


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run_in_process(args: argparse.Namespace) -> int:
    with SlackServer() as slack, FakeLLMServer(sub_latency=args.sub_latency) as llm:
        llm.root_responder = lambda conversation: MAP_EVERY_LINE
        llm.record_requests = False
        slack.add_user("U1", "Alice")
        teams = [f"T{i}" for i in range(args.workspaces)]
        for team in teams:
            slack.add_channel(f"C{team}", f"general-{team.lower()}")
            for i in range(args.messages):
                slack.add_message(f"C{team}", f"{team} update {i}: all is well", user="U1")
        with tempfile.TemporaryDirectory() as tmp:
            settings = harness_settings(
                slack_api_url=slack.api_url,
                openai_base_url=llm.openai_base_url,
                database_url=f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}",
                rlm_max_parallel_calls=args.limit,
                rlm_max_runs_per_workspace=args.runs_per_workspace,
                rlm_progress_interval=0.0 if args.unpaced else 1.0,
                rlm_status_edit_interval=0.0 if args.unpaced else 1.2,
            )
            bot = await BotHarness(settings, response_base=slack.url).start()
            assert bot.events is not None and bot.services is not None
            try:
                started = time.perf_counter()
                acks: list[float] = []
                in_flight_at_ack: list[int] = []
                for n in range(args.questions):
                    team = teams[n % len(teams)]
                    channel = f"C{team}"
                    if n % 2:
                        ts = slack.add_message(channel, f"<@{BOT_USER}> question {n}", user="U1")
                        event = mention(channel, f"<@{BOT_USER}> question {n}", ts)
                        reply = await bot.events.event(event, team_id=team)
                    else:
                        reply = await bot.events.command(
                            f"ask question {n}", team_id=team, channel_id=channel
                        )
                    if reply.status != 200:
                        print(f"question {n}: HTTP {reply.status}", file=sys.stderr)
                        return 1
                    acks.append(reply.seconds)
                    in_flight_at_ack.append(len(bot.services.tasks))
                    await asyncio.sleep(args.gap)
                await bot.settle(600)
                elapsed = time.perf_counter() - started
                runs = await bot.store.list_runs()
                limiters = bot.services.limiters
                peaks = {t: (limiters.get(t).peak, limiters.get(t).max_in_flight) for t in teams}
            finally:
                await bot.close()
        calls = Counter(c.method for c in slack.calls if c.status == 200 and c.error is None)
        posts = [c for c in slack.calls_to("chat.postMessage") if c.error is None]
        by_channel: dict[str, list[float]] = {}
        for c in posts:
            by_channel.setdefault(str(c.params.get("channel")), []).append(c.at)

    finished = sum(r.status == "finished" for r in runs)
    print(f"questions: {args.questions} across {args.workspaces} workspaces in {elapsed:.1f} s")
    print(f"runs finished: {finished}/{len(runs)}")
    print(
        f"ack latency: p50 {percentile(acks, 0.5) * 1000:.1f} ms, "
        f"p99 {percentile(acks, 0.99) * 1000:.1f} ms, max {max(acks) * 1000:.1f} ms "
        f"(target p99 < 100 ms; background tasks at ack: median "
        f"{statistics.median(in_flight_at_ack):.0f}, max {max(in_flight_at_ack)})"
    )
    per_run = ", ".join(
        f"{method} {n / max(1, len(runs)):.1f}" for method, n in sorted(calls.items())
    )
    print(f"Slack API calls per run: {per_run}")
    busiest = max((peak_per_minute(times) for times in by_channel.values()), default=0)
    thread_posts = Counter(str(c.params["thread_ts"]) for c in posts if c.params.get("thread_ts"))
    print(
        f"posts per channel: peak {busiest} in any minute; "
        f"most posts in one run's thread: {max(thread_posts.values(), default=0)}"
    )
    worst = 0
    for team, (peak, limit) in peaks.items():
        worst = max(worst, peak - limit)
        print(f"workspace {team}: peak sub-calls in flight {peak} (limit {limit})")
    ok = finished == args.questions and worst <= 0 and percentile(acks, 0.99) < 0.1
    print("OK" if ok else "NOT OK")
    return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=50)
    parser.add_argument("--workspaces", type=int, default=5)
    parser.add_argument("--messages", type=int, default=30, help="history messages per channel")
    parser.add_argument("--limit", type=int, default=4, help="RLM_MAX_PARALLEL_CALLS")
    parser.add_argument("--runs-per-workspace", type=int, default=2)
    parser.add_argument("--sub-latency", type=float, default=0.05)
    parser.add_argument("--gap", type=float, default=0.02, help="seconds between questions")
    parser.add_argument("--unpaced", action="store_true", help="no pacing of posts and edits")
    parser.add_argument("--replicas", default="1,3", help="replica counts to run, in turn")
    parser.add_argument("--in-process", action="store_true", help="one app here, on SQLite")
    args = parser.parse_args()
    if args.in_process:
        sys.exit(asyncio.run(run_in_process(args)))
    from bot_replicas_load import run_replicas

    codes = [asyncio.run(run_replicas(args, int(n))) for n in args.replicas.split(",")]
    sys.exit(max(codes))


if __name__ == "__main__":
    main()
