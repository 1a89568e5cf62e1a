"""The three provider interfaces, each through its real SDK, against the loopback LLM server."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import sys
import threading
import time
import warnings
from collections.abc import Iterator

import pytest
from conftest import TEST_API_KEY, MakeLLM
from fake_llm import FakeLLMServer

from rlm import (
    AnthropicInterface,
    AuthenticationError,
    BadResponseError,
    ConfigurationError,
    GeminiInterface,
    OpenAIInterface,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
    interface_from_spec,
)
from rlm.clients._errors import retry_after_seconds

PROVIDERS = ["openai", "anthropic", "gemini"]
KEY_ENVS = {
    "openai": ["OPENAI_API_KEY"],
    "anthropic": ["ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"],
    "gemini": ["GEMINI_API_KEY", "GOOGLE_API_KEY"],
}


@pytest.fixture(params=PROVIDERS)
def provider(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def sent_key(server: FakeLLMServer) -> str | None:
    headers = server.requests[-1].headers
    bearer = headers.get("authorization", "").removeprefix("Bearer ")
    return headers.get("x-api-key") or headers.get("x-goog-api-key") or bearer or None


# -- plain calls ------------------------------------------------------------------------------


def test_sync_query_reaches_the_provider_route(
    provider: str, llm_server: FakeLLMServer, make_llm: MakeLLM
) -> None:
    llm = make_llm(provider)
    assert llm.query("hello there") == "[sub] hello there"
    [request] = llm_server.requests
    assert (request.protocol, request.model, request.kind) == (provider, "sub-model", "sub")
    assert request.messages == [{"role": "user", "content": "hello there"}]
    assert sent_key(llm_server) == TEST_API_KEY


async def test_async_query(provider: str, llm_server: FakeLLMServer, make_llm: MakeLLM) -> None:
    llm = make_llm(provider)
    replies = await asyncio.gather(*(llm.query_async(f"q{i}") for i in range(3)))
    assert replies == ["[sub] q0", "[sub] q1", "[sub] q2"]
    assert llm_server.count("sub") == 3


def test_gemini_uses_the_path_the_sdk_builds(llm_server: FakeLLMServer, make_llm: MakeLLM) -> None:
    make_llm("gemini", model="sub-gemini").query("x")
    assert llm_server.requests[0].path.endswith("/models/sub-gemini:generateContent")


def test_system_message_goes_where_each_protocol_wants_it(
    provider: str, llm_server: FakeLLMServer, make_llm: MakeLLM
) -> None:
    conversation = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second question"},
    ]
    completion = make_llm(provider, max_output_tokens=77).chat(conversation)  # type: ignore[arg-type]
    assert completion.text == "[sub] second question"
    request = llm_server.requests[0]
    assert request.messages == conversation
    body = request.body
    if provider == "openai":
        assert body["messages"][0] == {"role": "system", "content": "Answer briefly."}
        assert body["max_completion_tokens"] == 77
    elif provider == "anthropic":
        assert body["system"] == "Answer briefly."
        assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
        assert body["max_tokens"] == 77
    else:
        assert body["systemInstruction"]["parts"] == [{"text": "Answer briefly."}]
        assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
        assert body["generationConfig"]["maxOutputTokens"] == 77


def test_usage_counts_tokens_from_the_response(provider: str, make_llm: MakeLLM) -> None:
    llm = make_llm(provider)
    first = llm.chat([{"role": "user", "content": "one two three"}])
    # The fake counts words: 3 in, "[sub] one two three" is 4 out.
    assert (first.input_tokens, first.output_tokens) == (3, 4)
    llm.query("four five")
    usage = llm.usage
    assert (usage.calls, usage.input_tokens, usage.output_tokens) == (2, 5, 7)
    assert usage.failed_calls == 0 and usage.total_tokens == 12


# -- provider:model strings -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "cls", "model"),
    [
        ("openai:gpt-4o", OpenAIInterface, "gpt-4o"),
        ("anthropic:claude-sonnet-4-5", AnthropicInterface, "claude-sonnet-4-5"),
        ("gemini:gemini-2.5-flash", GeminiInterface, "gemini-2.5-flash"),
        (" OpenAI:org/model:tag ", OpenAIInterface, "org/model:tag"),
    ],
)
def test_interface_from_spec(spec: str, cls: type, model: str) -> None:
    llm = interface_from_spec(spec, api_key="k", base_url="http://127.0.0.1:9/v1", max_retries=7)
    assert type(llm) is cls
    assert (llm.model, llm.base_url, llm.max_retries) == (model, "http://127.0.0.1:9/v1", 7)
    assert llm.spec == f"{cls.provider}:{model}"


@pytest.mark.parametrize("spec", ["gpt-4o", "mistral:large", "openai:", ":gpt-4o", "", None])
def test_bad_spec_names_the_known_providers(spec: str | None) -> None:
    with pytest.raises(ConfigurationError) as caught:
        interface_from_spec(spec, api_key="k")  # type: ignore[arg-type]
    message = str(caught.value)
    assert repr(spec) in message and "openai, anthropic, gemini" in message


def test_spec_resolution_reaches_the_server(llm_server: FakeLLMServer) -> None:
    llm = interface_from_spec("anthropic:sub-claude", api_key="k", base_url=llm_server.url)
    assert llm.query("hi") == "[sub] hi"
    assert llm_server.requests[0].model == "sub-claude"


# -- keys and endpoints -----------------------------------------------------------------------


def test_missing_key_is_a_configuration_error(
    provider: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in KEY_ENVS[provider]:
        monkeypatch.delenv(name, raising=False)
    cls = {"openai": OpenAIInterface, "anthropic": AnthropicInterface, "gemini": GeminiInterface}
    with pytest.raises(ConfigurationError) as caught:
        cls[provider]("m")
    message = str(caught.value)
    assert KEY_ENVS[provider][0] in message and "api_key=" in message
    assert message.count(".") == 1  # one sentence


def test_key_from_the_sdk_environment_variable(
    provider: str, llm_server: FakeLLMServer, make_llm: MakeLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in KEY_ENVS[provider]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(KEY_ENVS[provider][0], "key-from-env")
    llm_server.required_key = "key-from-env"
    assert make_llm(provider, api_key=None).query("hi") == "[sub] hi"
    assert sent_key(llm_server) == "key-from-env"


def test_gemini_base_url_from_environment(
    llm_server: FakeLLMServer, make_llm: MakeLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEMINI_BASE_URL", llm_server.url)
    assert make_llm("gemini", base_url=None).query("via env") == "[sub] via env"
    monkeypatch.setenv("GEMINI_BASE_URL", "http://127.0.0.1:9")
    explicit = make_llm("gemini", base_url=llm_server.url)
    assert explicit.query("explicit wins") == "[sub] explicit wins"


# -- failures ---------------------------------------------------------------------------------


def test_server_error_then_success_is_retried(
    provider: str, llm_server: FakeLLMServer, make_llm: MakeLLM
) -> None:
    llm_server.fail_next(1, 500)
    llm = make_llm(provider)
    assert llm.query("again") == "[sub] again"
    assert [r.status for r in llm_server.requests] == [500, 200]
    assert llm.usage.calls == 1 and llm.usage.failed_calls == 0


async def test_rate_limit_waits_for_retry_after(
    provider: str, llm_server: FakeLLMServer, make_llm: MakeLLM
) -> None:
    llm = make_llm(provider, retry_base_delay=0.001)
    await llm.query_async("warm up")  # the SDK client is made once per loop: not timed below
    llm_server.fail_next(1, 429, retry_after=0.3)
    started = time.monotonic()
    assert await llm.query_async("patience") == "[sub] patience"
    waited = time.monotonic() - started
    assert 0.3 <= waited < 0.8
    assert [r.status for r in llm_server.requests[1:]] == [429, 200]


def test_rate_limit_error_carries_retry_after(
    provider: str, llm_server: FakeLLMServer, make_llm: MakeLLM
) -> None:
    llm_server.fail_next(1, 429, retry_after=7)
    with pytest.raises(RateLimitError) as caught:
        make_llm(provider, max_retries=0).query("x")
    assert (caught.value.retry_after, caught.value.status, caught.value.attempts) == (7.0, 429, 1)


def test_retries_exhausted_raise_the_typed_error(
    provider: str, llm_server: FakeLLMServer, make_llm: MakeLLM
) -> None:
    llm_server.fail_next(10, 503)
    llm = make_llm(provider, max_retries=2)
    with pytest.raises(ProviderUnavailableError) as caught:
        llm.query("doomed")
    error = caught.value
    assert (error.status, error.attempts, error.provider, error.model) == (
        503,
        3,
        provider,
        "sub-model",
    )
    assert "after 3 attempts" in str(error) and "HTTP 503" in str(error)
    assert llm_server.count() == 3
    assert llm.usage.failed_calls == 1 and llm.usage.calls == 0


def test_wrong_key_is_an_authentication_error_not_retried(
    provider: str, llm_server: FakeLLMServer, make_llm: MakeLLM
) -> None:
    llm_server.required_key = "the-right-key"
    with pytest.raises(AuthenticationError) as caught:
        make_llm(provider, api_key="a-wrong-key", max_retries=3).query("x")
    assert (caught.value.status, caught.value.attempts) == (401, 1)
    assert KEY_ENVS[provider][0] in str(caught.value)
    assert llm_server.count() == 1


@pytest.mark.parametrize(("status", "body"), [(400, None), (404, None)])
def test_refused_is_a_bad_response_not_retried(
    provider: str,
    llm_server: FakeLLMServer,
    make_llm: MakeLLM,
    status: int,
    body: str | None,
) -> None:
    llm_server.fail_next(1, status, body=body)
    with pytest.raises(BadResponseError) as caught:
        make_llm(provider, max_retries=3).query("x")
    assert (caught.value.status, caught.value.attempts) == (status, 1)
    assert llm_server.count() == 1


@pytest.mark.parametrize("body", ["not json", '{"unexpected": true}', "[]"])
def test_unreadable_success_body_is_retried_then_a_bad_response(
    provider: str, llm_server: FakeLLMServer, make_llm: MakeLLM, body: str
) -> None:
    llm_server.fail_next(1, 200, body=body)
    assert make_llm(provider, max_retries=3).query("x") == "[sub] x"
    assert llm_server.count() == 2
    llm_server.fail_next(4, 200, body=body)
    with pytest.raises(BadResponseError) as caught:
        make_llm(provider, max_retries=3).query("x")
    assert (caught.value.status, caught.value.attempts) == (200, 4)


def test_timeout_is_a_timeout_error(
    provider: str, llm_server: FakeLLMServer, make_llm: MakeLLM
) -> None:
    llm_server.sub_latency = 2.0
    started = time.monotonic()
    with pytest.raises(ProviderTimeoutError) as caught:
        make_llm(provider, timeout=0.3, max_retries=0).query("slow")
    assert time.monotonic() - started < 1.5
    assert caught.value.status is None and "0.3 s" in str(caught.value)


def test_connection_refused_is_unavailable(provider: str, make_llm: MakeLLM) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    suffix = "/v1" if provider == "openai" else ""
    llm = make_llm(provider, base_url=f"http://127.0.0.1:{port}{suffix}", max_retries=1)
    with pytest.raises(ProviderUnavailableError) as caught:
        llm.query("anyone?")
    assert caught.value.status is None and caught.value.attempts == 2


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"Retry-After": "0.5"}, 0.5),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_header_forms(headers: dict[str, str], seconds: float | None) -> None:
    assert retry_after_seconds(headers) == seconds


def test_retry_after_as_http_date() -> None:
    when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 < (retry_after_seconds({"retry-after": when}) or 0) <= 30


# -- the sync bridge --------------------------------------------------------------------------


async def test_sync_query_inside_a_running_loop(provider: str, make_llm: MakeLLM) -> None:
    llm = make_llm(provider)
    assert llm.query("from a notebook") == "[sub] from a notebook"
    assert await llm.query_async("then async") == "[sub] then async"


def test_sync_query_from_threads(provider: str, make_llm: MakeLLM) -> None:
    llm = make_llm(provider)
    replies: list[str] = []
    threads = [
        threading.Thread(target=lambda i=i: replies.append(llm.query(f"t{i}"))) for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(replies) == [f"[sub] t{i}" for i in range(4)]


@contextlib.contextmanager
def loop_noise() -> Iterator[list[str]]:
    """Collect ResourceWarnings and errors raised in destructors, such as 'Event loop is closed'."""
    noise: list[str] = []
    previous_hook = sys.unraisablehook
    sys.unraisablehook = lambda u: noise.append(f"{u.exc_type.__name__}: {u.exc_value}")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield noise
            gc.collect()
        noise.extend(
            str(w.message)
            for w in caught
            if issubclass(w.category, ResourceWarning) or "loop is closed" in str(w.message)
        )
    finally:
        sys.unraisablehook = previous_hook


def test_sync_query_twice_leaves_nothing_open(provider: str, make_llm: MakeLLM) -> None:
    llm = make_llm(provider)
    with loop_noise() as noise:
        assert llm.query("first") == "[sub] first"
        assert llm.query("second") == "[sub] second"
        del llm
    assert noise == []
