"""Redis killed under two replicas with runs under way and started again empty, and a
replica pointed at another Redis: Redis holds caps only, so no run is taken for dead, every
run finishes once, and the caps held before the restart are put back (not exceeded)."""

from __future__ import annotations

import asyncio
import shutil

import pytest
from bot_harness import wait_until
from slack_runs import ANSWER_FOOTER

from bot.slack import messages
from tests.faults.servers import OwnRedis
from tests.test_replicas import TEAMS, all_final, ask, start, two_workspaces
from tests.test_replicas import shared as shared  # the fixture, as is

pytestmark = pytest.mark.slow


@pytest.fixture
async def own_redis():
    if shutil.which("redis-server") is None:
        pytest.skip("SKIPPED LOUDLY: redis-server is not installed")
    servers: list[OwnRedis] = []

    def make() -> OwnRedis:
        server = OwnRedis()
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


@pytest.fixture
async def replicas():
    from replica_cluster import stop_all

    started: list = []
    yield started
    await stop_all(started)


def answers_and_notices(slack, runs):
    for run in runs:
        posts = slack.posts(run.channel_id, thread_ts=run.thread_ts)
        answers = [p for p in posts if ANSWER_FOOTER.search(p)]
        seen = slack.seen(run.channel_id, thread_ts=run.thread_ts)
        yield run, len(answers), sum(t.count(messages.INTERRUPTED) for t in seen)


async def test_redis_restarted_empty_takes_no_live_run_for_dead(
    shared, replicas, own_redis, slack, llm_server, tmp_path
):
    _, _, store = shared
    redis = own_redis()
    two_workspaces(slack, llm_server, lines=8)
    llm_server.sub_latency = 0.6  # a map of 9 at 3 in flight: about 2 s, past the outage
    two = await start(2, replicas, shared, slack, llm_server, tmp_path, REDIS_URL=redis.url)
    sent = [await ask(two[n % 2], slack, TEAMS[n % 2], n) for n in range(4)]
    await wait_until(lambda: sum(llm_server.in_flight_by.values()) > 0, seconds=30)
    redis.kill()
    await asyncio.sleep(4.0)  # two leases: long enough for a liveness key to have gone
    redis.start()  # empty: nothing was saved
    runs = await all_final(store, len(sent), seconds=60, slack=slack)
    assert [r.status for r in runs] == ["finished"] * len(sent), [(r.id, r.error) for r in runs]
    for run, answers, notices in answers_and_notices(slack, runs):
        assert (answers, notices) == (1, 0), run.id
    for team in TEAMS:
        assert llm_server.peak_by[team] <= 3  # the sub-call cap (test_replicas.SUBCALL_CAP)
    log = "".join(line for r in two for line in r.log)
    assert "was lost" not in log and "Traceback" not in log
    # Once per replica, not per attempt; a pooled connection the restart cut may fail once
    # more on its first use after Redis is back, which is a second short outage at most.
    assert log.count("Redis cannot be reached") <= 4


async def test_a_replica_on_another_redis_takes_no_live_run_for_dead(
    shared, replicas, own_redis, slack, llm_server, tmp_path
):
    _, _, store = shared
    first, second = own_redis(), own_redis()
    two_workspaces(slack, llm_server, lines=4)
    llm_server.root_latency = 1.0
    [a] = await start(1, replicas, shared, slack, llm_server, tmp_path, REDIS_URL=first.url)
    [b] = await start(1, replicas, shared, slack, llm_server, tmp_path, REDIS_URL=second.url)
    sent = [await ask((a, b)[n % 2], slack, TEAMS[n % 2], n) for n in range(6)]
    runs = await all_final(store, len(sent), seconds=90, slack=slack)
    assert [r.status for r in runs] == ["finished"] * len(sent)
    for run, answers, notices in answers_and_notices(slack, runs):
        assert (answers, notices) == (1, 0), run.id
