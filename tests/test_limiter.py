from __future__ import annotations

import asyncio
import threading

import pytest

from rlm import ConfigurationError, KeyedLimiter, Limiter


async def _hold(limiter: Limiter, seconds: float) -> None:
    async with limiter.slot():
        await asyncio.sleep(seconds)


async def test_cap_is_reached_and_never_exceeded() -> None:
    limiter = Limiter(3)
    await asyncio.gather(*(_hold(limiter, 0.01) for _ in range(20)))
    assert limiter.peak == 3
    assert limiter.in_flight == 0


async def test_cancelled_waiter_does_not_leak_a_slot() -> None:
    limiter = Limiter(1)
    holder = asyncio.create_task(_hold(limiter, 0.05))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(_hold(limiter, 0.0))
    await asyncio.sleep(0.01)
    waiter.cancel()
    await asyncio.gather(holder, waiter, return_exceptions=True)
    assert limiter.in_flight == 0
    await asyncio.wait_for(_hold(limiter, 0), 1)


def test_shared_across_event_loops_in_threads() -> None:
    limiter = Limiter(2)

    async def many() -> None:
        await asyncio.gather(*(_hold(limiter, 0.01) for _ in range(10)))

    def run() -> None:
        asyncio.run(asyncio.wait_for(many(), 10))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert limiter.peak == 2
    assert limiter.in_flight == 0


def test_keyed_limiter_gives_one_limiter_per_key() -> None:
    keyed = KeyedLimiter(4)
    assert keyed.get("T1") is keyed.get("T1")
    assert keyed.get("T1") is not keyed.get("T2")
    assert keyed.get("T2").max_in_flight == 4


def test_bad_cap_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        Limiter(0)
