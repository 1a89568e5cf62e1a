"""The load of benchmarks/bot_load.py against N `rlm-bot` processes sharing one PostgreSQL
database and one Redis: questions per second, ack latency, and each workspace's peak
sub-calls in flight as the loopback LLM server saw them from every replica, against its cap.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from bot_harness import MAP_EVERY_LINE, mention
from fake_llm import FakeLLMServer
from replica_cluster import (
    Unavailable,
    create_database,
    delete_keys,
    drop_database,
    redis_prefix,
    replica_env,
    start_replicas,
    stop_all,
)
from slack_server import BOT_USER, SlackServer

from bot.storage import Store


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run_replicas(args: argparse.Namespace, replicas: int) -> int:
    try:
        prefix = await redis_prefix()
        url = await create_database()
    except Unavailable as exc:
        print(f"{replicas} replica(s): skipped: {exc}", file=sys.stderr)
        return 1
    try:
        store = await Store.open(url)  # migrated once, before the replicas start
        try:
            return await _measure(args, replicas, url, prefix, store)
        finally:
            await store.close()
    finally:
        await drop_database(url)
        await delete_keys(prefix)


async def _measure(
    args: argparse.Namespace, replicas: int, url: str, prefix: str, store: Store
) -> int:
    marker = re.compile(r"\[(T\d+)\]")
    with SlackServer() as slack, FakeLLMServer(sub_latency=args.sub_latency) as llm:
        llm.root_responder = lambda conversation: MAP_EVERY_LINE
        llm.record_requests = False
        llm.workspace_of = lambda prompt: m.group(1) if (m := marker.search(prompt)) else None
        slack.add_user("U1", "Alice")
        teams = [f"T{i}" for i in range(args.workspaces)]
        for team in teams:
            slack.add_channel(f"C{team}", f"general-{team.lower()}")
            for i in range(args.messages):
                slack.add_message(f"C{team}", f"[{team}] update {i}: all is well", user="U1")
        env = replica_env(
            slack_api_url=slack.api_url,
            llm_base_url=llm.openai_base_url,
            database_url=url,
            prefix=prefix,
            RLM_MAX_PARALLEL_CALLS=str(args.limit),
            RLM_MAX_RUNS_PER_WORKSPACE=str(args.runs_per_workspace),
        )
        with tempfile.TemporaryDirectory() as tmp:
            started_replicas = await start_replicas(replicas, env, Path(tmp))
            try:
                started = time.perf_counter()
                acks: list[float] = []
                for n in range(args.questions):
                    team = teams[n % len(teams)]
                    events = started_replicas[n % replicas].events
                    assert events is not None
                    channel = f"C{team}"
                    if n % 2:
                        ts = slack.add_message(channel, f"<@{BOT_USER}> question {n}", user="U1")
                        event = mention(channel, f"<@{BOT_USER}> question {n}", ts)
                        # Ids unique across the replicas' clients: a repeat would be deduped.
                        reply = await events.event(event, team_id=team, event_id=f"Ev{n:06d}")
                    else:
                        reply = await events.command(
                            f"ask question {n}", team_id=team, channel_id=channel
                        )
                    if reply.status != 200:
                        print(f"question {n}: HTTP {reply.status}", file=sys.stderr)
                        return 1
                    acks.append(reply.seconds)
                    await asyncio.sleep(args.gap)
                try:
                    runs = await _all_final(store, args.questions)
                except TimeoutError:
                    runs = await store.list_runs()
                    print(f"not all runs ended: {[r.status for r in runs]}", file=sys.stderr)
                    for replica in started_replicas:
                        print("".join(replica.log[-20:]), file=sys.stderr)
                    return 1
                elapsed = time.perf_counter() - started
            finally:
                for replica in started_replicas:
                    if replica.proc.returncode is None:
                        replica.proc.send_signal(signal.SIGTERM)
                await stop_all(started_replicas)
        peaks = {team: llm.peak_by[team] for team in teams}

    finished = sum(r.status == "finished" for r in runs)
    print(f"-- {replicas} replica(s), PostgreSQL + Redis")
    print(
        f"questions: {args.questions} across {args.workspaces} workspaces in {elapsed:.1f} s "
        f"({args.questions / elapsed:.2f} questions/s)"
    )
    print(f"runs finished: {finished}/{len(runs)}")
    print(
        f"ack latency: p50 {percentile(acks, 0.5) * 1000:.1f} ms, "
        f"p99 {percentile(acks, 0.99) * 1000:.1f} ms, max {max(acks) * 1000:.1f} ms"
    )
    worst = 0
    for team, peak in peaks.items():
        worst = max(worst, peak - args.limit)
        print(f"workspace {team}: peak sub-calls in flight {peak} (limit {args.limit})")
    ok = finished == args.questions and worst <= 0
    print("OK" if ok else "NOT OK")
    return 0 if ok else 1


async def _all_final(store: Store, count: int, seconds: float = 300) -> list:
    async with asyncio.timeout(seconds):
        while True:
            runs = await store.list_runs()
            if len(runs) == count and all(r.status not in ("queued", "running") for r in runs):
                return runs
            await asyncio.sleep(0.1)
