"""The sub-call lane and the SDK path, side by side: the same results and the same errors.

Every scenario runs twice against the loopback LLM server, once through the interface's SDK
(`chat_async`) and once through the lane (`rlm.lane`), for each of the three providers; what
the caller gets (reply, tokens, error type, status, message, attempts, Retry-After), what the
interface counts and what the server received must be identical.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import pytest
from conftest import MakeLLM
from fake_llm import MALFORMED_BODIES, FakeLLMServer

from rlm import Message, ProviderError
from rlm.clients._base import LLMInterface
from rlm.lane import SubcallLane, endpoint_for, lane_for

PROVIDERS = ["openai", "anthropic", "gemini"]
HELLO: list[Message] = [{"role": "user", "content": "hello there"}]


@pytest.fixture(params=PROVIDERS)
def provider(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def outcome(call: Callable[[], Awaitable[Any]]) -> tuple[Any, ...]:
    """What a caller can see of one call: the completion, or the error and what it carries."""
    try:
        completion = await call()
    except ProviderError as exc:
        return (
            type(exc).__name__,
            exc.status,
            str(exc),
            exc.attempts,
            getattr(exc, "retry_after", None),
        )
    return (
        "ok",
        completion.text,
        completion.input_tokens,
        completion.output_tokens,
        completion.cached_input_tokens,
        completion.cache_write_tokens,
    )


async def both_paths(
    server: FakeLLMServer,
    make_llm: MakeLLM,
    provider: str,
    prepare: Callable[[], None],
    messages: list[Message] = HELLO,
    **kw: Any,
) -> dict[str, Any]:
    """Run one scenario through each path with fresh interfaces; what each path saw."""
    seen: dict[str, Any] = {}
    for path in ("sdk", "lane"):
        server.reset_stats()
        prepare()
        llm = make_llm(provider, **kw)
        started = time.monotonic()
        if path == "sdk":
            result = await outcome(partial(llm.chat_async, messages))
        else:
            lane = lane_for(llm, ceiling=8)
            assert lane is not None
            async with lane.opened():
                result = await outcome(partial(lane.complete, messages))
        seen[path] = {
            "result": result,
            "usage": llm.usage,
            "statuses": [r.status for r in server.requests],
            "received": [
                (r.protocol, r.model, r.messages, r.path, signed(r.headers), output_cap(r.body))
                for r in server.requests
            ],
            "seconds": time.monotonic() - started,
        }
    return seen


SIGNING = ("authorization", "x-api-key", "x-goog-api-key", "anthropic-version")


def signed(headers: dict[str, str]) -> dict[str, str]:
    """The headers that say who calls and which API version: both paths send the same."""
    return {name: headers[name] for name in SIGNING if name in headers}


def output_cap(body: Any) -> Any:
    """The output-token cap as each protocol carries it."""
    if not isinstance(body, dict):
        return None
    return body.get(
        "max_completion_tokens",
        body.get("max_tokens", (body.get("generationConfig") or {}).get("maxOutputTokens")),
    )


def assert_same(seen: dict[str, Any]) -> dict[str, Any]:
    sdk, lane = seen["sdk"], seen["lane"]
    for field in ("result", "usage", "statuses", "received"):
        assert lane[field] == sdk[field], field
    return sdk  # type: ignore[no-any-return]


async def test_success_with_a_system_message(
    provider: str, llm_server: FakeLLMServer, make_llm: MakeLLM
) -> None:
    messages: list[Message] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "noted"},
        {"role": "user", "content": "second question"},
    ]
    llm_server.cache_usage = lambda kind, tokens: (tokens // 3, 1)  # prompt-cache hits
    sdk = assert_same(
        await both_paths(
            llm_server, make_llm, provider, lambda: None, messages, max_output_tokens=321
        )
    )
    assert sdk["result"][4] > 0 and sdk["usage"].cached_input_tokens == sdk["result"][4]
    assert llm_server.requests[0].body is not None
    assert output_cap(llm_server.requests[0].body) == 321
    assert sdk["result"][:2] == ("ok", "[sub] second question")
    assert sdk["result"][2] > 0 and sdk["result"][3] > 0
    assert sdk["usage"].calls == 1 and sdk["usage"].input_tokens == sdk["result"][2]


async def test_wrong_key(provider: str, llm_server: FakeLLMServer, make_llm: MakeLLM) -> None:
    def prepare() -> None:
        llm_server.required_key = "the-right-key"

    sdk = assert_same(
        await both_paths(llm_server, make_llm, provider, prepare, api_key="a-wrong-key")
    )
    assert sdk["result"][:2] == ("AuthenticationError", 401)
    assert sdk["usage"].failed_calls == 1


@pytest.mark.parametrize("body", [None, "plain words, not JSON", '{"detail": "odd shape"}'])
async def test_refused_request(
    provider: str, llm_server: FakeLLMServer, make_llm: MakeLLM, body: str | None
) -> None:
    sdk = assert_same(
        await both_paths(
            llm_server, make_llm, provider, lambda: llm_server.fail_next(1, 400, body=body)
        )
    )
    assert sdk["result"][:2] == ("BadResponseError", 400) and sdk["statuses"] == [400]


async def test_rate_limited_then_answered_after_retry_after(
    provider: str, llm_server: FakeLLMServer, make_llm: MakeLLM
) -> None:
    seen = await both_paths(
        llm_server,
        make_llm,
        provider,
        lambda: llm_server.fail_next(1, 429, retry_after=0.25),
        retry_base_delay=0.001,
    )
    sdk = assert_same(seen)
    assert sdk["statuses"] == [429, 200] and sdk["result"][0] == "ok"
    assert seen["sdk"]["seconds"] >= 0.25 and seen["lane"]["seconds"] >= 0.25


async def test_rate_limited_to_the_end(
    provider: str, llm_server: FakeLLMServer, make_llm: MakeLLM
) -> None:
    sdk = assert_same(
        await both_paths(
            llm_server,
            make_llm,
            provider,
            lambda: llm_server.fail_next(5, 429, retry_after=0.02),
            max_retries=1,
        )
    )
    assert sdk["result"][0] == "RateLimitError" and sdk["result"][3:] == (2, 0.02)


async def test_server_errors_then_success(
    provider: str, llm_server: FakeLLMServer, make_llm: MakeLLM
) -> None:
    sdk = assert_same(
        await both_paths(llm_server, make_llm, provider, lambda: llm_server.fail_next(2, 503))
    )
    assert sdk["statuses"] == [503, 503, 200] and sdk["usage"].calls == 1


async def test_server_errors_to_the_end(
    provider: str, llm_server: FakeLLMServer, make_llm: MakeLLM
) -> None:
    sdk = assert_same(
        await both_paths(llm_server, make_llm, provider, lambda: llm_server.fail_next(9, 500))
    )
    assert sdk["result"][:2] == ("ProviderUnavailableError", 500) and sdk["result"][3] == 3


async def test_timeout(provider: str, llm_server: FakeLLMServer, make_llm: MakeLLM) -> None:
    def prepare() -> None:
        llm_server.hang_seconds = 2.0
        llm_server.fail_next(1, "hang")

    sdk = assert_same(
        await both_paths(llm_server, make_llm, provider, prepare, timeout=0.3, max_retries=0)
    )
    assert sdk["result"][:2] == ("ProviderTimeoutError", None)


@pytest.mark.parametrize("body", [*MALFORMED_BODIES, "[]", '{"choices": [], "content": 3}'])
async def test_malformed_success_body(
    provider: str, llm_server: FakeLLMServer, make_llm: MakeLLM, body: str
) -> None:
    sdk = assert_same(
        await both_paths(
            llm_server,
            make_llm,
            provider,
            lambda: llm_server.fail_next(2, 200, body=body),
            max_retries=1,
        )
    )
    assert sdk["result"][:2] == ("BadResponseError", 200) and sdk["result"][3] == 2


async def test_connection_refused(provider: str, make_llm: MakeLLM) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    suffix = "/v1" if provider == "openai" else ""
    llm = make_llm(provider, base_url=f"http://127.0.0.1:{port}{suffix}", max_retries=1)
    sdk = await outcome(lambda: llm.chat_async(HELLO))
    lane = lane_for(llm, ceiling=4)
    assert lane is not None
    async with lane.opened():
        via_lane = await outcome(lambda: lane.complete(HELLO))
    # The transports word a refused connection differently; the rest must agree.
    assert (via_lane[0], via_lane[1], via_lane[3]) == (sdk[0], sdk[1], sdk[3])
    assert sdk[:2] == ("ProviderUnavailableError", None)


# -- where the lane sends, resolved as the SDKs resolve it ----------------------------------


@pytest.mark.parametrize(
    ("provider", "env", "url", "key"),
    [
        (
            "openai",
            {"OPENAI_API_KEY": "k-env", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1/"},
            "http://127.0.0.1:9/v1/chat/completions",
            "k-env",
        ),
        (
            "anthropic",
            {"ANTHROPIC_AUTH_TOKEN": "k-token", "ANTHROPIC_BASE_URL": "http://127.0.0.1:9"},
            "http://127.0.0.1:9/v1/messages",
            "k-token",
        ),
        (
            "gemini",
            {"GEMINI_API_KEY": "k-gem", "GEMINI_BASE_URL": "http://127.0.0.1:9"},
            "http://127.0.0.1:9/v1/models/m:generateContent",
            "k-gem",
        ),
        (
            "gemini",
            {"GEMINI_API_KEY": "k-gem", "GOOGLE_API_KEY": "k-google"},
            "https://generativelanguage.googleapis.com/v1/models/m:generateContent",
            "k-google",
        ),
    ],
)
def test_endpoint_from_the_sdk_environment(
    monkeypatch: pytest.MonkeyPatch, provider: str, env: dict[str, str], url: str, key: str
) -> None:
    for name in (
        "OPENAI_API_KEY OPENAI_BASE_URL ANTHROPIC_API_KEY ANTHROPIC_AUTH_TOKEN "
        "ANTHROPIC_BASE_URL GEMINI_API_KEY GOOGLE_API_KEY GEMINI_BASE_URL GOOGLE_GEMINI_BASE_URL"
    ).split():
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    from rlm import interface_from_spec

    endpoint = endpoint_for(interface_from_spec(f"{provider}:m"))
    assert (endpoint.url, endpoint.key) == (url, key)
    assert key in " ".join(endpoint.headers.values())


async def test_env_endpoint_reaches_the_same_server_on_both_paths(
    monkeypatch: pytest.MonkeyPatch, provider: str, llm_server: FakeLLMServer
) -> None:
    from conftest import base_url_for

    from rlm import interface_from_spec

    envs = {"openai": "OPENAI", "anthropic": "ANTHROPIC", "gemini": "GEMINI"}
    monkeypatch.setenv(f"{envs[provider]}_API_KEY", "from-env")
    monkeypatch.setenv(f"{envs[provider]}_BASE_URL", base_url_for(llm_server, provider))
    llm_server.required_key = "from-env"
    llm: LLMInterface = interface_from_spec(f"{provider}:sub-model")
    assert (await llm.chat_async(HELLO)).text == "[sub] hello there"
    await llm.aclose()
    lane = lane_for(llm, ceiling=2)
    assert isinstance(lane, SubcallLane)
    async with lane.opened():
        assert (await lane.complete(HELLO)).text == "[sub] hello there"
    assert [r.status for r in llm_server.requests] == [200, 200]


def test_a_base_url_with_credentials_stays_on_the_sdk_path(make_llm: MakeLLM) -> None:
    from rlm.lane import subcall_path

    llm = make_llm("openai", base_url="http://user:pw@127.0.0.1:9/v1")
    assert lane_for(llm, ceiling=4) is None
    lane, gate, subcall = subcall_path(llm, use_lane=True, ceiling=4)
    assert lane is None and gate is None and subcall == llm.chat_async
