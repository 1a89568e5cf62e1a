"""The loopback servers' fault injection, checked through the real SDK and Web API client:
what the fault suite relies on to be what it says."""

from __future__ import annotations

import time

import aiohttp
import pytest
from fake_llm import HANG, MALFORMED, FakeLLMServer
from slack_server import BOT_TOKEN

from rlm import BadResponseError, ProviderTimeoutError, RateLimitError


async def test_a_hang_outlasts_the_client_timeout_and_is_retried(llm_server, make_llm):
    llm_server.hang_seconds = 5.0
    llm_server.fail_next(1, HANG)
    llm = make_llm("openai", timeout=0.3, max_retries=1, retry_base_delay=0.01)
    started = time.monotonic()
    assert await llm.query_async("hello") == "[sub] hello"
    assert 0.3 <= time.monotonic() - started < 2.0
    assert [r.fault for r in llm_server.requests] == [HANG, ""]
    assert llm_server.requests[0].status == 0 and llm_server.injected == {HANG: 1}
    llm_server.fail_next(1, HANG)
    with pytest.raises(ProviderTimeoutError):
        await make_llm("openai", timeout=0.3, max_retries=0).query_async("again")


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_malformed_bodies_are_unreadable_in_every_protocol(llm_server, make_llm, provider):
    llm_server.fail_next(3, MALFORMED)
    llm = make_llm(provider, max_retries=0)
    for _ in range(3):
        with pytest.raises(BadResponseError):
            await llm.query_async("hello")
    assert llm_server.injected == {MALFORMED: 3}
    assert await llm.query_async("hello") == "[sub] hello"


async def test_the_random_mix_reaches_root_calls_and_counts_by_kind(make_llm):
    with FakeLLMServer(seed=3) as server:
        server.failure_rate = 0.5
        server.failure_kind = "any"
        server.failure_statuses = [429, MALFORMED]
        server.failure_retry_after = 0.25
        root = make_llm("openai", "root-model", base_url=server.openai_base_url, max_retries=0)
        outcomes = []
        for i in range(16):
            try:
                await root.query_async(f"p{i}")
                outcomes.append("ok")
            except RateLimitError as exc:
                assert exc.retry_after == 0.25
                outcomes.append("429")
            except BadResponseError:
                outcomes.append(MALFORMED)
        await root.aclose()
        assert set(outcomes) == {"ok", "429", MALFORMED}
        assert server.injected == {
            "429": outcomes.count("429"),
            MALFORMED: outcomes.count(MALFORMED),
        }
        assert {r.kind for r in server.requests} == {"root"}
    with pytest.raises(ValueError, match="status must be an HTTP status"):
        server.fail_next(1, "explode")


async def test_slack_rate_limits_a_share_of_calls_and_counts_them(slack):
    slack.rate_limit_share("auth.test", 0.5, retry_after=2)
    statuses = []
    async with aiohttp.ClientSession() as session:
        for _ in range(20):
            headers = {"Authorization": f"Bearer {BOT_TOKEN}"}
            async with session.post(slack.api_url + "auth.test", headers=headers) as response:
                statuses.append(response.status)
                if response.status == 429:
                    assert response.headers["Retry-After"] == "2"
        slack.rate_limit_share("auth.test", 0)
        async with session.post(slack.api_url + "auth.test", headers=headers) as response:
            assert response.status == 200
    assert set(statuses) == {200, 429}
    assert slack.throttled["auth.test"] == statuses.count(429)
