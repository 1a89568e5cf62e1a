"""The caps held in Redis (bot/shared_limits.py) against the machine's Redis server: the cap
holds across replicas under concurrency, a killed holder's slots come back once its leases
run out, cancelled waiters leak nothing, held slots stay held past one lease, and are put
back when Redis forgets them."""

from __future__ import annotations

import asyncio
import random
import sys
import uuid

import pytest

redis_asyncio = pytest.importorskip("redis.asyncio", reason="redis-py is not installed")

from bot.ops.replicas import open_shared_limits  # noqa: E402
from bot.runs.shared_limits import SharedLimits  # noqa: E402
from bot.settings import SettingsError  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
async def prefix():
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    client = redis_asyncio.Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        pytest.skip(f"SKIPPED LOUDLY: no Redis server at {REDIS_URL} ({exc})")
    name = f"rlmtest-{uuid.uuid4().hex[:12]}"
    yield name
    keys = [key async for key in client.scan_iter(match=f"{name}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
async def replicas(prefix):
    """`replicas(n, lease_seconds=...)`: n SharedLimits, each its own connection, as
    separate replicas would have; closed at teardown."""
    made: list[SharedLimits] = []

    async def make(n: int, lease_seconds: float = 5.0) -> list[SharedLimits]:
        for _ in range(n):
            limits = SharedLimits.from_url(REDIS_URL, prefix=prefix, lease_seconds=lease_seconds)
            await limits.start()
            made.append(limits)
        return made[-n:]

    yield make
    for limits in made:
        await limits.close()


async def holders(prefix: str, name: str) -> int:
    client = redis_asyncio.Redis.from_url(REDIS_URL)
    try:
        return int(await client.zcard(f"{prefix}:cap:{name}"))
    finally:
        await client.aclose()


async def test_the_cap_holds_across_replicas_under_concurrency_and_nothing_leaks(replicas, prefix):
    three = await replicas(3)
    cap = 3
    in_flight = peak = done = 0
    rng = random.Random(7)

    async def call(limits: SharedLimits) -> None:
        nonlocal in_flight, peak, done
        async with limits.semaphore("subcalls:T1", cap).slot():
            in_flight += 1
            peak = max(peak, in_flight)
            assert await holders(prefix, "subcalls:T1") <= cap
            await asyncio.sleep(rng.uniform(0.0, 0.03))
            in_flight -= 1
            done += 1

    async with asyncio.timeout(60):
        await asyncio.gather(*(call(three[i % 3]) for i in range(90)))
    assert done == 90
    assert peak == cap  # reached, never passed
    assert await holders(prefix, "subcalls:T1") == 0
    for limits in three:
        semaphore = limits.semaphore("subcalls:T1", cap)
        assert semaphore.in_flight == 0 and semaphore.waiting == 0
        assert not any(limits._held.values())


async def test_workspaces_have_caps_of_their_own(replicas, prefix):
    [limits] = await replicas(1)
    keyed = limits.keyed("subcalls", 1)
    first = await keyed.get("TA").acquire()
    assert await keyed.get("TA").try_acquire() is None  # TA is full
    other = await keyed.get("TB").try_acquire()  # TB is not
    assert other is not None
    await keyed.get("TA").release(first)
    await keyed.get("TB").release(other)
    assert keyed.keys() == ["TA", "TB"]


HOLDER = """
import asyncio, sys
from bot.runs.shared_limits import SharedLimits

async def main():
    limits = SharedLimits.from_url(sys.argv[1], prefix=sys.argv[2], lease_seconds=1.0)
    await limits.start()
    semaphore = limits.semaphore("subcalls:T1", 2)
    await semaphore.acquire()
    await semaphore.acquire()
    print("held", flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


async def test_a_killed_holder_frees_its_slots_once_its_leases_run_out(replicas, prefix):
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLDER, REDIS_URL, prefix, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert holder.stdout is not None
        line = await asyncio.wait_for(holder.stdout.readline(), 30)
        assert line.strip() == b"held"
        [limits] = await replicas(1)
        semaphore = limits.semaphore("subcalls:T1", 2)
        # Alive, its leases are renewed: still held after more than one lease.
        await asyncio.sleep(1.5)
        assert await semaphore.try_acquire() is None
        assert await holders(prefix, "subcalls:T1") == 2
        holder.kill()
        await holder.wait()
        async with asyncio.timeout(10):  # the leases (1 s) run out; the waiters get both
            tokens = await asyncio.gather(semaphore.acquire(), semaphore.acquire())
        assert await holders(prefix, "subcalls:T1") == 2
        for token in tokens:
            await semaphore.release(token)
        assert await holders(prefix, "subcalls:T1") == 0
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()


async def test_cancelled_waiters_leave_no_slot_behind(replicas, prefix):
    one, two = await replicas(2)
    held = await one.semaphore("subcalls:T1", 1).acquire()
    waiters = [asyncio.create_task(two.semaphore("subcalls:T1", 1).acquire()) for _ in range(10)]
    await asyncio.sleep(0.2)
    release = asyncio.create_task(one.semaphore("subcalls:T1", 1).release(held))
    for task in waiters:  # cancelled while the slot is being freed and handed on
        task.cancel()
    await release
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    await asyncio.sleep(0.2)  # a slot handed to a cancelled waiter is given back meanwhile
    assert await holders(prefix, "subcalls:T1") == 0
    token = await one.semaphore("subcalls:T1", 1).try_acquire()
    assert token is not None
    await one.semaphore("subcalls:T1", 1).release(token)


async def test_closing_a_replica_gives_back_its_slots(replicas, prefix):
    [one] = await replicas(1)
    await one.semaphore("runs:T1", 2).acquire()
    await one.semaphore("runs:T1", 2).acquire()
    assert await holders(prefix, "runs:T1") == 2
    await one.close()
    assert await holders(prefix, "runs:T1") == 0
    # Redis holds caps only: nothing says which replicas are alive.
    client = redis_asyncio.Redis.from_url(REDIS_URL)
    try:
        keys = {k.decode() async for k in client.scan_iter(match=f"{prefix}:*")}
    finally:
        await client.aclose()
    assert not [k for k in keys if ":replica:" in k]


async def test_slots_held_are_put_back_when_redis_forgets_them_and_newcomers_wait(replicas, prefix):
    """What a Redis restarted empty looks like to the replicas: their renewals put back the
    slots they hold, and for a grace after the loss nobody else takes one."""
    one, two = await replicas(2, lease_seconds=1.5)
    held = [await one.semaphore("runs:T1", 2).acquire() for _ in range(2)]
    client = redis_asyncio.Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
        await client.delete(*keys)  # as FLUSHALL would, for this test's keys only
    finally:
        await client.aclose()
    # Asked at once, the other replica is told to wait (the grace), not given a slot.
    assert await two.semaphore("runs:T1", 2).try_acquire() is None
    await one.renew()
    assert await holders(prefix, "runs:T1") == 2
    await asyncio.sleep(one.grace_ms / 1000 + 0.1)
    assert await two.semaphore("runs:T1", 2).try_acquire() is None  # the cap is full again
    for token in held:
        await one.semaphore("runs:T1", 2).release(token)
    assert await two.semaphore("runs:T1", 2).try_acquire() is not None


async def test_an_unreachable_redis_stops_the_start_with_one_line(tmp_path):
    from bot_harness import harness_settings

    settings = harness_settings(
        slack_api_url="http://127.0.0.1:9/api/",
        openai_base_url="http://127.0.0.1:9/v1",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'rlm.db'}",
        redis_url="redis://:hunter2@127.0.0.1:1/0",
    )
    with pytest.raises(ValueError) as caught:
        await open_shared_limits(settings)
    message = str(caught.value)
    assert message.startswith("Redis at redis://:***@127.0.0.1:1/0 could not be reached (")
    assert message.endswith("check REDIS_URL.") and "\n" not in message
    assert "hunter2" not in message


def test_a_redis_url_that_is_not_one_is_refused_naming_the_variable(monkeypatch):
    from bot.settings import Settings

    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "s")
    monkeypatch.setenv("REDIS_URL", "localhost:6379")
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env_file=None)
    assert str(caught.value).startswith("REDIS_URL=localhost:6379 is not valid: must be a Redis")
