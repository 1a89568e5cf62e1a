"""Three `rlm-bot` processes on one PostgreSQL database and one Redis, two workspaces.

The loopback LLM server tells the workspaces apart by a marker in each channel's messages,
which every sub-call prompt quotes, and counts the sub-calls in flight per workspace: across
the three processes that never passes the workspace's cap. One replica killed mid-run gives
its slots back, its runs are marked interrupted once and their threads told once; no question
is lost and no event runs twice. A replica stopped with SIGTERM finishes within its grace.
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections import Counter

import pytest
from bot_harness import MAP_EVERY_LINE, mention, wait_until
from replica_cluster import (
    Replica,
    Unavailable,
    create_database,
    delete_keys,
    drop_database,
    redis_members,
    redis_prefix,
    replica_env,
    start_replicas,
    stop_all,
)
from slack_runs import ANSWER_FOOTER
from slack_server import BOT_USER
from sqlalchemy import text

from bot.slack import messages
from bot.storage import Store

pytestmark = pytest.mark.slow

TEAMS = ("TA", "TB")
SUBCALL_CAP = 3
RUN_CAP = 2


@pytest.fixture
async def shared(tmp_path):
    """A fresh PostgreSQL database (migrated, then dropped) and a Redis prefix (cleared)."""
    try:
        prefix = await redis_prefix()
        url = await create_database()
    except Unavailable as exc:
        pytest.skip(f"SKIPPED LOUDLY: three replicas need PostgreSQL and Redis: {exc}")
    store = await Store.open(url)  # migrated once here, before the replicas start together
    try:
        yield url, prefix, store
    finally:
        await store.close()
        await drop_database(url)
        await delete_keys(prefix)


@pytest.fixture
async def replicas():
    started: list[Replica] = []
    yield started
    await stop_all(started)


def two_workspaces(slack, llm_server, lines: int = 12) -> None:
    for team in TEAMS:
        slack.add_channel(f"C{team}", f"general-{team.lower()}")
        for i in range(lines):
            slack.add_message(f"C{team}", f"[{team}] note {i}: all is well", user="U1")
    llm_server.root_responder = lambda conversation: MAP_EVERY_LINE
    found = re.compile(r"\[(T[AB])\]")

    def workspace_of(prompt: str) -> str | None:
        match = found.search(prompt)
        return match.group(1) if match else None

    llm_server.workspace_of = workspace_of


async def start(n, replicas, shared, slack, llm_server, tmp_path, **extra):
    url, prefix, _ = shared
    caps = {
        "RLM_MAX_PARALLEL_CALLS": str(SUBCALL_CAP),
        "RLM_MAX_RUNS_PER_WORKSPACE": str(RUN_CAP),
        "RLM_LEASE_SECONDS": "2",
    }
    env = replica_env(
        slack_api_url=slack.api_url,
        llm_base_url=llm_server.openai_base_url,
        database_url=url,
        prefix=prefix,
        **(caps | extra),
    )
    started = await start_replicas(n, env, tmp_path)
    replicas.extend(started)
    assert len({r.replica_id for r in started}) == n and all(r.replica_id for r in started)
    return started


class RunningPeaks:
    """Samples the runs marked running per workspace in the database while a test runs."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.peak: Counter[str] = Counter()
        self._task = asyncio.create_task(self._sample())

    async def _sample(self) -> None:
        query = text("SELECT team_id, count(*) FROM runs WHERE status = 'running' GROUP BY 1")
        while True:
            async with self.store._read() as session:
                for team, count in (await session.execute(query)).all():
                    self.peak[team] = max(self.peak[team], count)
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def ask(replica: Replica, slack, team: str, n: int, *, event_id: str | None = None):
    """A mention in the workspace's channel; returns its event id."""
    assert replica.events is not None
    channel = f"C{team}"
    ts = slack.add_message(channel, f"<@{BOT_USER}> question {n}", user="U1")
    event_id = event_id or f"Ev{team}{n:04d}"
    reply = await replica.events.event(
        mention(channel, f"<@{BOT_USER}> question {n}", ts), team_id=team, event_id=event_id
    )
    assert reply.status == 200
    return event_id, ts


async def all_final(store: Store, count: int, seconds: float = 120, slack=None) -> list:
    """The `count` runs, once all have ended; with `slack`, once each finished one's answer
    is posted too (a run's end is stored before its answer is posted)."""
    found: list = []

    def answered(run) -> bool:
        posts = slack.posts(run.channel_id, thread_ts=run.thread_ts)
        return any(ANSWER_FOOTER.search(p) for p in posts)

    async def check() -> bool:
        runs = await store.list_runs()
        found[:] = runs
        ended = len(runs) == count and all(r.status not in ("queued", "running") for r in runs)
        return ended and (slack is None or all(answered(r) for r in runs if r.status == "finished"))

    await eventually(check, seconds)
    return found


async def eventually(check, seconds: float) -> None:
    """Poll the coroutine function `check` until it returns True; TimeoutError after."""
    async with asyncio.timeout(seconds):
        while True:
            if await check():
                return
            await asyncio.sleep(0.05)


async def test_three_replicas_hold_each_workspace_to_its_caps(
    shared, replicas, slack, llm_server, tmp_path
):
    _, _, store = shared
    two_workspaces(slack, llm_server)
    llm_server.sub_latency = 0.05
    three = await start(3, replicas, shared, slack, llm_server, tmp_path)
    peaks = RunningPeaks(store)
    questions = 18
    sent = []
    for n in range(questions):
        team = TEAMS[n % 2]
        sent.append(await ask(three[n % 3], slack, team, n))
        # The same delivery retried by Slack, arriving at another replica: ignored.
        retry = await three[(n + 1) % 3].events.event(
            mention(f"C{team}", f"<@{BOT_USER}> question {n}", sent[-1][1]),
            team_id=team,
            event_id=sent[-1][0],
            retry_num=1,
        )
        assert retry.status == 200
    runs = await all_final(store, questions, slack=slack)
    await peaks.stop()

    assert [r.status for r in runs] == ["finished"] * questions
    assert all(r.subcalls >= 12 for r in runs)  # the notes, and the questions asked before
    assert Counter(r.team_id for r in runs) == {"TA": 9, "TB": 9}
    # Every run was started by one of the replicas. Which ones is not fixed: whichever has
    # room claims the oldest queued run, and under load one replica can keep claiming the
    # successors of its own runs (the kill test shows others taking over queued work).
    assert {r.owner for r in runs} <= {r.replica_id for r in three}
    for team in TEAMS:
        assert llm_server.peak_by[team] == SUBCALL_CAP  # reached, never passed, across all
        assert 1 <= peaks.peak[team] <= RUN_CAP
    assert llm_server.in_flight_by == {"TA": 0, "TB": 0}
    # Each thread has its answer, once.
    for team in TEAMS:
        answers = [p for p in slack.posts(f"C{team}") if ANSWER_FOOTER.search(p)]
        assert len(answers) == questions // 2
    for replica in three:
        limits = replica.replica_id
        assert "Traceback" not in "".join(replica.log), limits


async def test_a_killed_replica_frees_its_slots_and_its_runs_are_told_once(
    shared, replicas, slack, llm_server, tmp_path
):
    _, prefix, store = shared
    two_workspaces(slack, llm_server)
    llm_server.sub_latency = 1.2  # a map of 13 at 3 in flight: about 6 s
    three = await start(3, replicas, shared, slack, llm_server, tmp_path)
    first, second = three[0], three[1]
    # Two runs on the first replica, two on the second: both workspaces at their run cap.
    sent = [await ask(first, slack, team, n) for n, team in enumerate(TEAMS)]
    sent += [await ask(second, slack, team, n + 2) for n, team in enumerate(TEAMS)]
    # Two more that cannot start yet: they wait in the shared queue.
    sent += [await ask(first, slack, team, n + 4) for n, team in enumerate(TEAMS)]

    async def ready() -> bool:
        runs = await store.list_runs()
        running = sum(r.status == "running" for r in runs)
        return len(runs) == 6 and running == 4 and sum(r.status == "queued" for r in runs) == 2

    await eventually(ready, 60)
    # The victim is a replica with runs under way: the first, unless another replica's sweep
    # claimed its runs before it did (the replica that takes a question only tries first).
    owners = {r.owner for r in await store.list_runs() if r.status == "running"}
    victim = next(r for r in three if r.replica_id in owners)
    survivors = [r for r in three if r is not victim]
    await wait_until(lambda: llm_server.in_flight_by["TA"] + llm_server.in_flight_by["TB"] > 0)
    await victim.stop(signal.SIGKILL)
    assert victim.proc.returncode == -signal.SIGKILL
    at_kill = await store.list_runs()
    cut_short = [r.id for r in at_kill if r.owner == victim.replica_id and r.status == "running"]
    waiting = [r.id for r in at_kill if r.status == "queued"]
    assert cut_short and waiting

    # More questions after the kill, to the survivors, and a retry of every earlier one.
    for n, (event_id, ts) in enumerate(sent):
        team = TEAMS[n % 2]
        await survivors[n % 2].events.event(
            mention(f"C{team}", f"<@{BOT_USER}> question {n}", ts),
            team_id=team,
            event_id=event_id,
            retry_num=1,
        )
    for n in range(6, 10):
        sent.append(await ask(survivors[n % 2], slack, TEAMS[n % 2], n))

    runs = await all_final(store, len(sent), seconds=120)
    by_id = {r.id: r for r in runs}
    for run_id in cut_short:
        assert by_id[run_id].status == "interrupted"
        thread = slack.seen(by_id[run_id].channel_id, thread_ts=by_id[run_id].thread_ts)
        assert sum(text.count(messages.INTERRUPTED) for text in thread) == 1
    # What the victim had queued was not lost: the survivors ran it.
    survivor_ids = {r.replica_id for r in survivors}
    assert all(by_id[i].status == "finished" and by_id[i].owner in survivor_ids for i in waiting)
    others = [r for r in runs if r.id not in cut_short]
    assert [r.status for r in others] == ["finished"] * len(others)
    assert len(runs) == len(sent)  # one run per question: none lost, none run twice
    assert sorted(r.thread_ts for r in runs) == sorted(ts for _, ts in sent)
    # The victim's slots came back: none of its leases is left, and the cap still held.
    for team in TEAMS:
        for kind in ("subcalls", "runs"):
            members = await redis_members(f"{prefix}:cap:{kind}:{team}")
            assert not [m for m in members if m.startswith(victim.replica_id)]
        assert llm_server.peak_by[team] <= SUBCALL_CAP
    # Each marked once, by one survivor.
    marked = "".join(survivors[0].log + survivors[1].log).count("by a stopped process: interrupted")
    assert marked == len(cut_short)


async def test_sigterm_lets_a_run_finish_within_the_grace_period(
    shared, replicas, slack, llm_server, tmp_path
):
    _, _, store = shared
    two_workspaces(slack, llm_server, lines=4)
    llm_server.root_latency = 2.0
    [first, second] = await start(
        2, replicas, shared, slack, llm_server, tmp_path, RLM_SHUTDOWN_GRACE_SECONDS="30"
    )
    await ask(first, slack, "TA", 1)
    await wait_until(lambda: llm_server.count("root") == 1, seconds=30)
    first.proc.send_signal(signal.SIGTERM)
    assert await first.wait() == 0
    [run] = await all_final(store, 1)
    assert run.status == "finished" and run.owner == first.replica_id
    assert "runs under way have 30 s to finish" in "".join(first.log)
    # It took no new work once told to stop; the other replica still answers.
    await ask(second, slack, "TB", 2)
    runs = await all_final(store, 2)
    assert [r.status for r in runs] == ["finished", "finished"]
    assert not any(messages.INTERRUPTED in t for t in slack.seen("CTA") + slack.seen("CTB"))


async def test_sigterm_past_the_grace_period_interrupts_the_run_once(
    shared, replicas, slack, llm_server, tmp_path
):
    _, _, store = shared
    two_workspaces(slack, llm_server, lines=4)
    llm_server.root_latency = 60.0
    [first, second] = await start(
        2, replicas, shared, slack, llm_server, tmp_path, RLM_SHUTDOWN_GRACE_SECONDS="1"
    )
    _, ts = await ask(first, slack, "TA", 1)
    await wait_until(lambda: llm_server.count("root") == 1, seconds=30)
    first.proc.send_signal(signal.SIGTERM)
    assert await first.wait(30) == 0
    [run] = await all_final(store, 1)
    assert run.status == "interrupted"
    await asyncio.sleep(2.5)  # past the lease: the other replica's sweeps find nothing to do
    assert sum(t.count(messages.INTERRUPTED) for t in slack.seen("CTA", thread_ts=ts)) == 1
    assert "by a stopped process: interrupted" not in "".join(second.log)


async def test_a_replica_starting_leaves_the_live_runs_of_another_alone(
    shared, replicas, slack, llm_server, tmp_path
):
    _, _, store = shared
    two_workspaces(slack, llm_server, lines=4)
    llm_server.root_latency = 20.0  # still thinking long after the second has started
    [first] = await start(1, replicas, shared, slack, llm_server, tmp_path)
    _, ts = await ask(first, slack, "TA", 1)
    await wait_until(lambda: llm_server.count("root") == 1, seconds=30)
    [second] = await start(1, replicas, shared, slack, llm_server, tmp_path)
    await asyncio.sleep(2.5)  # past a lease: the second has swept for dead replicas twice
    [run] = await store.list_runs()
    assert run.status == "running" and run.owner == first.replica_id
    assert not any(messages.INTERRUPTED in t for t in slack.seen("CTA", thread_ts=ts))
    assert "by a stopped process: interrupted" not in "".join(second.log)


async def test_a_daily_budget_used_up_on_one_replica_is_used_up_on_all(
    shared, replicas, slack, llm_server, tmp_path
):
    _, _, store = shared
    two_workspaces(slack, llm_server, lines=4)
    [first, second] = await start(
        2, replicas, shared, slack, llm_server, tmp_path, RLM_DAILY_TOKENS="50"
    )
    await ask(first, slack, "TA", 1)
    [run] = await all_final(store, 1)
    assert run.status == "finished" and run.input_tokens + run.output_tokens >= 50
    _, refused_ts = await ask(second, slack, "TA", 2)
    await wait_until(lambda: slack.posts("CTA", thread_ts=refused_ts) != [], seconds=30)
    [refusal] = slack.posts("CTA", thread_ts=refused_ts)
    assert refusal == messages.DAILY_LIMIT_REACHED
    assert len(await store.list_runs()) == 1  # no run was started for it
    # Another workspace's day is its own.
    await ask(second, slack, "TB", 3)
    runs = await all_final(store, 2)
    assert [r.status for r in runs] == ["finished", "finished"]


async def test_a_stopping_replica_leaves_its_queued_runs_to_the_others(
    shared, replicas, slack, llm_server, tmp_path
):
    _, _, store = shared
    two_workspaces(slack, llm_server, lines=4)
    llm_server.root_latency = 2.0
    [first, second] = await start(
        2,
        replicas,
        shared,
        slack,
        llm_server,
        tmp_path,
        RLM_MAX_RUNS_PER_WORKSPACE="1",
        RLM_SHUTDOWN_GRACE_SECONDS="30",
    )
    await ask(first, slack, "TA", 1)
    await wait_until(lambda: llm_server.count("root") == 1, seconds=30)
    _, waiting_ts = await ask(first, slack, "TA", 2)  # the cap is full: it waits

    async def queued() -> bool:
        return [r.status for r in await store.list_runs()] == ["running", "queued"]

    await eventually(queued, 30)
    first.proc.send_signal(signal.SIGTERM)
    assert await first.wait() == 0
    runs = await all_final(store, 2)
    assert [r.status for r in runs] == ["finished", "finished"]
    assert [r.owner for r in runs] == [first.replica_id, second.replica_id]
    assert slack.posts("CTA", thread_ts=waiting_ts)[0] == messages.queued(1, 1)
