"""The loopback LLM server itself: scripts, failure injection, records, and its process mode."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from conftest import MakeLLM
from fake_llm import FakeLLMServer, default_root_reply

from rlm import ProviderUnavailableError


def test_root_script_is_fifo_then_responder_then_default(
    llm_server: FakeLLMServer, make_llm: MakeLLM
) -> None:
    seen: list[list[dict[str, str]]] = []

    def from_conversation(messages: list[dict[str, str]]) -> str:
        seen.append(messages)
        return f"saw {len(messages)} messages"

    llm_server.script_root("first", from_conversation)
    root = make_llm("anthropic", model="root-model")
    assert root.query("q1") == "first"
    reply = root.chat([{"role": "system", "content": "sys"}, {"role": "user", "content": "q2"}])
    assert reply.text == "saw 2 messages"
    assert seen == [[{"role": "system", "content": "sys"}, {"role": "user", "content": "q2"}]]
    assert root.query("q3") == default_root_reply([])
    llm_server.root_responder = lambda messages: "responder"
    assert root.query("q4") == "responder"
    assert (llm_server.count("root"), llm_server.count("sub"), llm_server.count("any")) == (4, 0, 4)


def test_sub_responder_gets_the_last_user_text(
    llm_server: FakeLLMServer, make_llm: MakeLLM
) -> None:
    long_reply = make_llm("openai").query("x" * 500)
    assert long_reply == "[sub] " + "x" * 194  # the default: deterministic, 200 characters
    llm_server.sub_responder = str.upper
    chat = [{"role": "user", "content": "quiet"}, {"role": "assistant", "content": "ok"}]
    chat.append({"role": "user", "content": "shout"})
    assert make_llm("gemini").chat(chat).text == "SHOUT"  # type: ignore[arg-type]


def test_default_root_reply_runs_as_a_map_reduce() -> None:
    reply = default_root_reply([{"role": "user", "content": "anything"}])
    [code] = re.findall(r"```repl\n(.*?)```", reply, re.DOTALL)
    assert reply.rstrip().endswith("FINAL_VAR(final_answer)")
    calls: list[tuple[str, list[str]]] = []

    def parallel_query(template: str, parts: list[str]) -> list[str]:
        calls.append((template, parts))
        return [f"answer {i}" for i in range(len(parts))]

    for context, chunks in (("a" * 9000, 3), (["x", "y"], 2)):
        calls.clear()
        namespace = {"context": context, "parallel_query": parallel_query}
        exec(code, namespace)
        assert len(calls[0][1]) == chunks and "{chunk}" in calls[0][0]
        assert namespace["final_answer"] == "\n".join(f"answer {i}" for i in range(chunks))


def test_fail_next_respects_kind(llm_server: FakeLLMServer, make_llm: MakeLLM) -> None:
    llm_server.fail_next(1, 503, kind="root")
    sub = make_llm("openai", max_retries=0)
    assert sub.query("untouched") == "[sub] untouched"
    llm_server.script_root("root ok")
    assert make_llm("openai", model="root-x", max_retries=1).query("q") == "root ok"
    assert [(r.kind, r.status) for r in llm_server.requests] == [
        ("sub", 200),
        ("root", 503),
        ("root", 200),
    ]
    llm_server.fail_next(1, 500, kind="any")
    with pytest.raises(ProviderUnavailableError):
        sub.query("a")
    with pytest.raises(ValueError, match="kind"):
        llm_server.fail_next(1, kind="both")


def test_fail_when_always_fails_matching_sub_prompts(
    llm_server: FakeLLMServer, make_llm: MakeLLM
) -> None:
    llm_server.fail_when(lambda prompt: "poison" in prompt, status=502)
    llm = make_llm("anthropic", max_retries=2)
    with pytest.raises(ProviderUnavailableError) as caught:
        llm.query("poison pill")
    assert caught.value.status == 502 and llm_server.count() == 3
    assert llm.query("wholesome") == "[sub] wholesome"


def test_failure_rate_is_seeded(make_llm: MakeLLM) -> None:
    def pattern() -> list[int]:
        with FakeLLMServer(seed=7) as server:
            server.failure_rate = 0.5
            server.failure_statuses = [500, 429]
            llm = make_llm("openai", base_url=server.openai_base_url, max_retries=0)

            async def run() -> None:
                for i in range(12):
                    try:
                        await llm.query_async(f"p{i}")
                    except Exception:
                        pass
                await llm.aclose()

            asyncio.run(run())
            return [r.status for r in server.requests]

    first = pattern()
    assert first == pattern()
    assert {500, 429, 200} <= set(first)


async def test_in_flight_peak_and_reset(llm_server: FakeLLMServer, make_llm: MakeLLM) -> None:
    llm_server.sub_latency = 0.2
    llm = make_llm("gemini")
    await asyncio.gather(*(llm.query_async(f"c{i}") for i in range(5)))
    assert llm_server.max_in_flight == 5 and llm_server.in_flight == 0
    llm_server.reset_stats()
    assert (llm_server.max_in_flight, llm_server.count(), llm_server.requests) == (0, 0, [])


async def test_raw_wire_shapes(llm_server: FakeLLMServer) -> None:
    async with aiohttp.ClientSession(llm_server.url) as http:
        body = {"contents": [{"role": "user", "parts": [{"text": "hi there"}]}]}
        async with http.post("/v1beta/models/sub-g:generateContent", json=body) as resp:
            reply = await resp.json()
        assert reply["candidates"][0]["content"]["parts"] == [{"text": "[sub] hi there"}]
        assert reply["usageMetadata"]["promptTokenCount"] == 2
        async with http.post("/v1beta/models/sub-g:countTokens", json=body) as resp:
            assert resp.status == 404
        llm_server.required_key = "k"
        async with http.post("/v1/messages", json={"model": "m", "messages": []}) as resp:
            assert resp.status == 401
            assert (await resp.json())["error"]["type"] == "authentication_error"
        llm_server.required_key = None
        llm_server.fail_next(1, 429, retry_after=2)
        async with http.post("/v1/chat/completions", json={"model": "m"}) as resp:
            assert (resp.status, resp.headers["Retry-After"]) == (429, "2")
            assert (await resp.json())["error"]["code"] == "rate_limit_exceeded"
        async with http.post("/v1/chat/completions", data=b"{oops") as resp:
            assert resp.status == 400


def test_responder_errors_become_500s(llm_server: FakeLLMServer, make_llm: MakeLLM) -> None:
    llm_server.sub_responder = lambda prompt: 1 / 0  # type: ignore[assignment,return-value]
    with pytest.raises(ProviderUnavailableError):
        make_llm("openai", max_retries=0).query("x")
    assert "ZeroDivisionError" in llm_server.errors[0]


def test_runs_as_a_process_and_prints_its_port() -> None:
    script = Path(__file__).with_name("fake_llm.py")
    command = [sys.executable, str(script), "--latency", "0.05"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        port = int(re.fullmatch(r"PORT (\d+)\n", line).group(1))  # type: ignore[union-attr]

        async def ask() -> dict[str, object]:
            async with aiohttp.ClientSession() as http:
                url = f"http://127.0.0.1:{port}/v1/chat/completions"
                payload = {"model": "sub", "messages": [{"role": "user", "content": "ping"}]}
                async with http.post(url, json=payload) as resp:
                    return await resp.json()  # type: ignore[no-any-return]

        try:
            reply = asyncio.run(ask())
        finally:
            proc.terminate()
        assert proc.wait(timeout=10) == 0
    assert reply["choices"][0]["message"]["content"] == "[sub] ping"  # type: ignore[index]
