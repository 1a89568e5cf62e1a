"""The database side of replicas (bot/storage): queued runs claimed once each however many
replicas claim at once, and runs of given owners marked interrupted once each, on SQLite and
on the machine's PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest
from replica_cluster import Unavailable, create_database, drop_database

from bot.storage import Store


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'rlm.db'}"
        return
    try:
        url = await create_database()
    except Unavailable as exc:
        pytest.skip(f"SKIPPED LOUDLY: the PostgreSQL case needs {exc}")
    try:
        yield url
    finally:
        await drop_database(url)


async def new_run(store: Store, team: str = "T1", **kw) -> int:
    return await store.create_run(
        team_id=team,
        channel_id="C1",
        thread_ts="1.000100",
        user_id="U1",
        question="why?",
        root_model="openai:root",
        sub_model="openai:sub",
        trigger="mention",
        **kw,
    )


async def test_queued_runs_are_claimed_once_each_oldest_first(database_url):
    stores = [await Store.open(database_url) for _ in range(3)]  # three replicas' pools
    try:
        ids = [await new_run(stores[0], scope="thread", exclude_ts="1.1,1.2") for _ in range(12)]
        other = await new_run(stores[0], team="T2")

        async def claim_all(store: Store, owner: str) -> list[int]:
            claimed = []
            while (run := await store.claim_queued_run("T1", owner)) is not None:
                assert run.status == "running" and run.owner == owner
                assert (run.scope, run.exclude_ts) == ("thread", "1.1,1.2")
                claimed.append(run.id)
            return claimed

        claims = await asyncio.gather(*(claim_all(s, f"r{i}") for i, s in enumerate(stores)))
        everything = sorted(i for claimed in claims for i in claimed)
        assert everything == ids  # each once, none missed
        assert all(claimed == sorted(claimed) for claimed in claims)  # oldest first
        assert (await stores[0].get_run(other)).status == "queued"  # another workspace's
        assert await stores[0].queued_teams() == ["T2"]
        assert await stores[0].runs_ahead("T1", ids[-1]) == len(ids) - 1
    finally:
        for store in stores:
            await store.close()


async def test_runs_of_gone_owners_are_marked_once_whoever_marks(database_url):
    stores = [await Store.open(database_url) for _ in range(3)]
    try:
        gone = [await new_run(stores[0], owner="gone") for _ in range(5)]
        alive = await new_run(stores[0], owner="alive")
        legacy = await new_run(stores[0])  # from before owners: nobody renews it
        queued = await new_run(stores[0])
        for run_id in (*gone, alive, legacy):
            await stores[0].set_run_status(run_id, "running")
        assert await stores[0].active_run_owners(("running",)) == {"gone", "alive", None}

        marked = await asyncio.gather(
            *(s.mark_interrupted_runs({"gone", None}, ("running",)) for s in stores)
        )
        ids = sorted(r.id for batch in marked for r in batch)
        assert ids == sorted([*gone, legacy])  # each by exactly one of them
        assert all(r.status == "interrupted" for batch in marked for r in batch)
        assert (await stores[0].get_run(alive)).status == "running"
        assert (await stores[0].get_run(queued)).status == "queued"  # the queue keeps it
        assert await stores[0].mark_interrupted_runs({"nobody"}) == []
    finally:
        for store in stores:
            await store.close()
