"""The database side of replicas (bot/storage): queued runs claimed once each however many
replicas claim at once, and runs of given owners marked interrupted once each, on SQLite and
on the machine's PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest
from replica_cluster import Unavailable, create_database, drop_database

from bot.storage import Fence, Store


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


async def test_a_run_whose_lease_ran_out_is_marked_once_and_its_old_owner_is_fenced_out(
    database_url,
):
    stores = [await Store.open(database_url) for _ in range(3)]
    try:
        live, dead = await new_run(stores[0]), await new_run(stores[0])
        fence_live = await stores[0].start_run(live, "alive", lease_seconds=60)
        fence_dead = await stores[1].start_run(dead, "gone", lease_seconds=0.2)
        assert fence_live is not None and fence_dead is not None and fence_dead.epoch == 1
        assert await stores[0].start_run(live, "other", 60) is None  # claimed once
        await asyncio.sleep(0.5)  # the dead one's lease runs out (the database's clock)
        assert await stores[0].renew_leases("alive", {live: fence_live.epoch}, 60) == {live}
        marked = await asyncio.gather(*(s.mark_expired_runs() for s in stores))
        assert [r.id for batch in marked for r in batch] == [dead]  # by exactly one
        # The old owner learns it lost: its end changes nothing, its renewal keeps nothing.
        finish = dict(
            status="finished", answer="late", error=None, iterations=1, subcalls=0,
            input_tokens=1, output_tokens=1, seconds=1.0,
        )  # fmt: skip
        assert await stores[1].finish_run(dead, fence=fence_dead, **finish) is False
        assert await stores[1].renew_leases("gone", {dead: fence_dead.epoch}, 60) == set()
        run = await stores[2].get_run(dead)
        assert (run.status, run.answer) == ("interrupted", None)
        # A writer with a stale epoch is fenced out too; the holder's own write lands.
        stale = Fence("alive", fence_live.epoch - 1)
        assert await stores[0].finish_run(live, fence=stale, **finish) is False
        assert await stores[0].set_run_status(live, "failed", fence=stale) is False
        assert await stores[0].finish_run(live, fence=fence_live, **finish) is True
        assert (await stores[2].get_run(live)).status == "finished"
        # A run already ended is never ended again.
        assert await stores[0].finish_run(live, **(finish | {"status": "failed"})) is False
    finally:
        for store in stores:
            await store.close()


async def test_migration_0007_downgrades_keeping_every_run_and_iteration(database_url):
    from sqlalchemy import text

    from bot.storage._engine import create_engine
    from bot.storage._migrate import downgrade, upgrade

    store = await Store.open(database_url)
    try:
        run_id = await new_run(store)
        await store.record_iteration(
            run_id, iteration=1, root_reply="r", code="c", output="o", subcalls=1,
            input_tokens=1, output_tokens=1, seconds=0.1,
        )  # fmt: skip
        await store.add_context_source(run_id, kind="thread", ref="C1", items=1, chars=3)
    finally:
        await store.close()
    engine = create_engine(database_url)
    try:
        await downgrade(engine, "0006")
        async with engine.connect() as connection:
            counts = [
                (await connection.execute(text(f"SELECT count(*) FROM {table}"))).scalar()
                for table in ("runs", "iterations", "context_sources")
            ]
            columns = (await connection.execute(text("SELECT * FROM runs"))).keys()
        assert counts == [1, 1, 1]
        assert "epoch" not in columns and "lease_expires_at" not in columns
        await upgrade(engine)
    finally:
        await engine.dispose()
    store = await Store.open(database_url)
    try:
        assert (await store.get_run(run_id)).epoch == 0
        assert len(await store.list_iterations(run_id)) == 1
    finally:
        await store.close()
