"""Full RLM runs through the real provider SDKs against the loopback LLM server."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from fake_llm import FakeLLMServer

import rlm.repl
from rlm import RLM, Limiter, LLMInterface
from tests.scripted_llm import repl

MakeLLM = Callable[..., LLMInterface]

MAP = "out = parallel_query('Q: {chunk}', context)\nprint(len(out))"


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_full_query_per_provider(
    provider: str, llm_server: FakeLLMServer, make_llm: MakeLLM
) -> None:
    llm_server.script_root(repl(MAP), repl("joined = ' | '.join(out)", "FINAL_VAR(joined)"))
    engine = RLM(make_llm(provider, "root-model"), make_llm(provider, "sub-model"))
    answer, trajectory = await engine.query_async("What is in it?", ["alpha", "beta", "gamma"])
    assert answer == "[sub] Q: alpha | [sub] Q: beta | [sub] Q: gamma"
    assert [step["subcalls"] for step in trajectory] == [3, 0]
    assert trajectory[0]["outputs"] == ["3\n"]
    roots = [r for r in llm_server.requests if r.kind == "root"]
    assert {r.protocol for r in llm_server.requests} == {provider}
    assert len(roots) == 2 and "parallel_query" in roots[0].messages[0]["content"]
    assert trajectory[0]["input_tokens"] > 0


def test_sync_query_through_a_real_sdk(llm_server: FakeLLMServer, make_llm: MakeLLM) -> None:
    # No script: the server's default root reply maps over chunks of the context.
    engine = RLM(make_llm("openai", "root-model"), make_llm("openai", "sub-model"))
    answer, trajectory = engine.query("Summarise", "x" * 9000)
    assert answer.count("[sub] Answer the question") == 3
    assert trajectory[0]["subcalls"] == 3


async def test_parallel_query_order_and_per_chunk_errors(
    llm_server: FakeLLMServer, make_llm: MakeLLM
) -> None:
    llm_server.sub_responder = lambda p: p.split(":")[1].strip()
    llm_server.fail_when(lambda p: "bad" in p, status=500)
    chunks = [f"c{i}" if i % 7 else f"bad{i}" for i in range(40)]
    llm_server.script_root(repl("out = parallel_query('Q: {chunk}', context)", "FINAL_VAR(out)"))
    sub = make_llm("openai", "sub-model", max_retries=1)
    answer, trajectory = await RLM(make_llm("openai", "root-model"), sub, 8).query_async(
        "q", chunks
    )
    results = eval(answer)  # the answer is the repr of a list of str
    for i, result in enumerate(results):
        if i % 7:
            assert result == f"c{i}"
        else:
            assert result.startswith("Error: ") and "500" in result
    assert trajectory[0]["subcalls"] == 40


async def test_concurrency_cap_is_reached_and_never_exceeded(
    llm_server: FakeLLMServer, make_llm: MakeLLM
) -> None:
    llm_server.sub_latency = 0.05
    llm_server.script_root(
        repl("out = parallel_query('{chunk}', [str(i) for i in range(60)])", "FINAL(ok)")
    )
    engine = RLM(make_llm("openai", "root-model"), make_llm("openai", "sub-model"), 6)
    await engine.query_async("q", "c")
    assert llm_server.max_in_flight == 6
    assert llm_server.count("sub") == 60


async def test_two_runs_share_one_limiter(llm_server: FakeLLMServer, make_llm: MakeLLM) -> None:
    llm_server.sub_latency = 0.05
    code = "out = parallel_query('{chunk}', [str(i) for i in range(40)])"
    llm_server.root_responder = lambda messages: repl(code) if len(messages) == 2 else "FINAL(done)"
    shared = Limiter(5)
    runs = [
        RLM(make_llm("openai", "root-model"), make_llm("openai", "sub-model"), limiter=shared)
        for _ in range(2)
    ]
    answers = await asyncio.gather(*(r.query_async("q", "c") for r in runs))
    assert [a for a, _ in answers] == ["done", "done"]
    assert llm_server.count("sub") == 80
    assert llm_server.max_in_flight == 5
    assert shared.peak == 5


async def test_transient_sub_failures_are_retried_transparently(
    llm_server: FakeLLMServer, make_llm: MakeLLM
) -> None:
    llm_server.fail_next(2, 429, retry_after=0.05)
    llm_server.fail_next(1, 503)
    llm_server.script_root(repl("out = parallel_query('{chunk}', ['a', 'b'])", "FINAL_VAR(out)"))
    sub = make_llm("anthropic", "sub-model", max_retries=4)
    answer, _ = await RLM(make_llm("anthropic", "root-model"), sub).query_async("q", "c")
    assert answer == "['[sub] a', '[sub] b']"


async def test_root_failure_raises_a_typed_error(
    llm_server: FakeLLMServer, make_llm: MakeLLM
) -> None:
    from rlm import ProviderUnavailableError

    llm_server.fail_next(10, 500, kind="root")
    engine = RLM(make_llm("gemini", "root-model", max_retries=1), make_llm("gemini"))
    with pytest.raises(ProviderUnavailableError) as caught:
        await engine.query_async("q", "c")
    assert caught.value.status == 500 and caught.value.attempts == 2


async def test_root_failing_before_the_worker_is_up_neither_hangs_nor_leaks(
    llm_server: FakeLLMServer, make_llm: MakeLLM
) -> None:
    from rlm import ProviderUnavailableError

    before = _workers()
    llm_server.fail_next(20, 500, kind="root")
    root = make_llm("openai", "root-model", max_retries=0)
    # The failure lands at points through the worker's spawn. (The race this guards, a
    # cancelled spawn hanging on Python 3.11, is rare: this does not reproduce it reliably.)
    for i in range(20):
        llm_server.root_latency = 0.005 * i
        engine = RLM(root, make_llm("openai"))
        with pytest.raises(ProviderUnavailableError):
            await asyncio.wait_for(engine.query_async("q", "c"), 20)
    assert _workers() - before == set()


def _workers() -> set[int]:
    """Processes running this checkout's REPL worker script, wherever they were re-parented."""
    script = str(Path(rlm.repl.__file__).with_name("_worker.py")).encode()
    found = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if script in f.read():
                    found.add(int(pid))
        except OSError:
            continue
    return found
