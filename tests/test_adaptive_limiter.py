"""The adaptive limiter per provider key: its policy alone, then against a rate-limited server."""

from __future__ import annotations

import asyncio

import pytest
from conftest import MakeLLM
from fake_llm import FakeLLMServer

from rlm import RLM, Limiter, SubcallProgress
from rlm._adaptive import AimdPolicy, ProviderLimiter, provider_limits
from rlm.clients._base import Completion
from rlm.lane import lane_for

# -- the policy, pure arithmetic --------------------------------------------------------------


def test_slow_start_doubles_until_trouble_then_probes_gently() -> None:
    policy = AimdPolicy(ceiling=1000, initial=4)
    for _ in range(4):  # one round trip's worth of successes at full width
        policy.on_success(started=0.0, latency=0.05, in_flight=int(policy.width))
    assert policy.width == 8
    policy.on_throttle(started=1.0, in_flight=7)
    assert policy.width == 8 * 0.7 and not policy.slow_start
    after_cut = policy.width
    for _ in range(6):  # one round trip: about a quarter of a call more
        policy.on_success(started=2.0, latency=0.05, in_flight=5)
    assert after_cut + 0.2 < policy.width < after_cut + 0.5
    for _ in range(200):  # the longer it holds, the bolder the probing
        policy.on_success(started=2.0, latency=0.05, in_flight=int(policy.width))
    assert policy.growth == 1.0 and policy.width > after_cut + 10


def test_never_above_the_ceiling_and_never_below_one() -> None:
    policy = AimdPolicy(ceiling=10, initial=8)
    for _ in range(100):
        policy.on_success(started=0.0, latency=0.05, in_flight=10)
    assert policy.width == 10
    for i in range(50):
        policy.on_throttle(started=float(10**6 + i), in_flight=10)  # each after the last cut
    assert policy.width == 1


def test_one_cut_per_round_trip_and_never_above_what_got_through() -> None:
    policy = AimdPolicy(ceiling=64, initial=64)
    policy.on_throttle(started=policy.last_decrease + 1e9, in_flight=60)
    assert policy.width == 64 * 0.7
    # Calls sent before that cut report their 429s afterwards: no new cut by the factor...
    for _ in range(20):
        policy.on_throttle(started=0.0, in_flight=40)
    assert policy.width == 40
    # ...but a 429 while few calls are in flight means few is what the provider takes.
    policy.on_throttle(started=0.0, in_flight=6)
    assert policy.width == 6


def test_a_half_used_width_does_not_grow() -> None:
    policy = AimdPolicy(ceiling=256, initial=32)
    for _ in range(200):
        policy.on_success(started=0.0, latency=0.05, in_flight=3)
    assert policy.width == 32


def test_latency_well_above_its_baseline_shrinks_the_width() -> None:
    policy = AimdPolicy(ceiling=256, initial=40)
    policy.slow_start = False
    for _ in range(50):
        policy.on_success(started=0.0, latency=0.05, in_flight=40)
    steady = policy.width
    for i in range(60):
        policy.on_success(started=float(10**6 + i), latency=0.6, in_flight=40)
    assert policy.width < steady * 0.9


# -- the limiter against the loopback server ------------------------------------------------


async def test_width_is_reached_and_never_exceeded() -> None:
    limiter = ProviderLimiter("test", ceiling=5, initial=5)
    in_flight = peak = 0

    async def attempt() -> Completion:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return Completion("ok")

    await asyncio.gather(*(limiter.call(attempt) for _ in range(40)))
    assert peak == 5 and limiter.in_flight == 0


async def test_cancelled_waiter_gives_its_slot_back() -> None:
    limiter = ProviderLimiter("test", ceiling=1, initial=1)
    gate = asyncio.Event()

    async def held() -> Completion:
        await gate.wait()
        return Completion("ok")

    first = asyncio.create_task(limiter.call(held))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(limiter.call(held))
    await asyncio.sleep(0.01)
    second.cancel()
    gate.set()
    await first
    with pytest.raises(asyncio.CancelledError):
        await second
    assert limiter.in_flight == 0
    assert (await limiter.call(held)).text == "ok"


def test_one_limiter_per_endpoint_and_key(make_llm: MakeLLM) -> None:
    a = lane_for(make_llm("openai"), ceiling=8)
    b = lane_for(make_llm("openai", model="other-model"), ceiling=8)
    c = lane_for(make_llm("openai", api_key="another-key"), ceiling=8)
    assert a is not None and b is not None and c is not None
    assert a.gate is b.gate and a.gate is not c.gate
    names = [limit.name for limit in provider_limits()]
    assert all("key" not in name for name in names)  # the key never shows


async def test_retry_after_holds_every_caller_on_the_key(
    llm_server: FakeLLMServer, make_llm: MakeLLM
) -> None:
    """One caller gets a 429 with Retry-After: nobody on that key sends until it has passed."""
    llm = make_llm("openai", max_retries=3)
    lane = lane_for(llm, ceiling=8)
    assert lane is not None
    llm_server.sub_latency = 0.02
    async with lane.opened():
        await lane.complete([{"role": "user", "content": "warm"}])
        llm_server.reset_stats()
        llm_server.fail_next(1, 429, retry_after=0.4)
        replies = await asyncio.gather(
            *(lane.complete([{"role": "user", "content": f"q{i}"}]) for i in range(40))
        )
    assert [r.text for r in replies] == [f"[sub] q{i}" for i in range(40)]
    times = llm_server.arrivals["test-key"]
    statuses = [r.status for r in llm_server.requests]
    held_from = times[statuses.index(429)]
    # Calls already on the wire when the 429 was sent may land just after it.
    during = [t for t in times if held_from + 0.05 < t < held_from + 0.4 - 0.01]
    assert during == []
    assert max(times) > held_from + 0.4


async def test_converges_under_a_rate_limit_with_few_429s(
    llm_server: FakeLLMServer, make_llm: MakeLLM
) -> None:
    """A token bucket of 80 requests a second: the width settles and 429s stay rare."""
    rate, calls = 80.0, 200
    llm_server.sub_latency = 0.05
    llm_server.rate_limit(rate, burst=10)
    llm = make_llm("openai", max_retries=20, api_key="rate-key")
    lane = lane_for(llm, ceiling=64)
    assert lane is not None and lane.gate is not None
    gate = Limiter(32)  # the workspace's cap, far above what the key allows

    async def batch(tag: str, n: int) -> float:
        async def one(i: int) -> str:
            async with gate.slot():
                return (await lane.complete([{"role": "user", "content": f"{tag}{i}"}])).text

        started = loop.time()
        replies = await asyncio.gather(*(one(i) for i in range(n)))
        assert replies == [f"[sub] {tag}{i}" for i in range(n)]
        return loop.time() - started

    loop = asyncio.get_running_loop()
    async with lane.opened():
        await batch("warm", 80)  # the first burst overshoots; the width comes down
        assert llm_server.throttled > 0
        llm_server.reset_stats()
        seconds = await batch("c", calls)
    throttled = llm_server.throttled
    assert throttled < 0.12 * calls, throttled
    # Rate times latency is 4 calls in flight; the width stays near it, far below 32.
    assert lane.gate.width <= 12
    # And it sustained most of the allowed rate (a loose floor: the benchmark measures it).
    assert calls / seconds > 0.7 * rate, calls / seconds


async def test_sub_call_progress_shows_the_width(
    llm_server: FakeLLMServer, make_llm: MakeLLM
) -> None:
    events: list[SubcallProgress] = []
    rlm = RLM(
        make_llm("openai", model="root-model"),
        make_llm("openai"),
        max_parallel_calls=4,
        provider_max_concurrency=9,
    )
    await rlm.query_async(
        "q",
        ["a", "b", "c"],
        on_event=lambda e: events.append(e) if isinstance(e, SubcallProgress) else None,
    )
    assert events and all(e.provider_width is not None for e in events)
    assert all(1 <= (e.provider_width or 0) <= 9 for e in events)


async def test_lane_off_still_goes_through_the_provider_limiter(
    llm_server: FakeLLMServer, make_llm: MakeLLM
) -> None:
    events: list[SubcallProgress] = []
    sub = make_llm("openai")
    rlm = RLM(make_llm("openai", model="root-model"), sub, subcall_lane=False)
    answer, _ = await rlm.query_async(
        "q",
        ["a", "b"],
        on_event=lambda e: events.append(e) if isinstance(e, SubcallProgress) else None,
    )
    assert "[sub]" in answer and sub.usage.calls == 2
    assert events and events[-1].provider_width is not None


async def test_the_fake_server_token_bucket_answers_429_with_the_wait(
    llm_server: FakeLLMServer, make_llm: MakeLLM
) -> None:
    from rlm import RateLimitError

    llm_server.rate_limit(10.0, burst=2)
    llm = make_llm("openai", max_retries=0)
    assert [await llm.query_async(f"q{i}") for i in range(2)] == ["[sub] q0", "[sub] q1"]
    with pytest.raises(RateLimitError) as caught:
        await llm.query_async("one too many")
    assert caught.value.retry_after is not None and 0.05 < caught.value.retry_after <= 0.1
    other = make_llm("openai", api_key="another-key", max_retries=0)
    assert await other.query_async("own bucket") == "[sub] own bucket"  # buckets are per key
    assert llm_server.throttled == 1 and len(llm_server.throttles) == 1


def test_the_name_shows_no_credentials_from_the_base_url() -> None:
    from rlm._adaptive import provider_limiter

    limiter = provider_limiter(
        "openai", "http://alice:s3cret@models.internal:8000/v1/chat/completions", "sk-key"
    )
    assert limiter.name == "openai models.internal:8000"
    shown = " ".join(str(limit) for limit in provider_limits())
    assert "s3cret" not in shown and "sk-key" not in shown
