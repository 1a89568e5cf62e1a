"""The interfaces' sync calls reuse one client on a private loop, and close it at exit."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from conftest import TEST_API_KEY, MakeLLM, base_url_for
from fake_llm import FakeLLMServer

from rlm._sync import _private_loop, run_on_private_loop

PROVIDERS = ["openai", "anthropic", "gemini"]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=PROVIDERS)
def provider(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_sync_calls_reuse_one_client(provider: str, make_llm: MakeLLM) -> None:
    llm = make_llm(provider)
    made: list[object] = []
    original = llm._make_client

    def counting() -> object:
        made.append(client := original())
        return client

    llm._make_client = counting  # type: ignore[method-assign]
    replies = [llm.query(f"q{i}") for i in range(5)]
    threads = [threading.Thread(target=llm.query, args=(f"t{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert replies == [f"[sub] q{i}" for i in range(5)]
    assert len(made) == 1 and llm.usage.calls == 9


async def test_sync_call_inside_a_running_loop_reuses_it_too(
    provider: str, make_llm: MakeLLM
) -> None:
    llm = make_llm(provider)
    assert llm.query("one") == "[sub] one"  # blocks this loop briefly, as a sync call does
    loop = _private_loop.loop()
    before = llm._clients[loop].client
    assert llm.query("two") == "[sub] two"
    assert llm._clients[loop].client is before


def test_a_sync_call_from_the_private_loop_itself_does_not_deadlock(
    make_llm: MakeLLM,
) -> None:
    llm = make_llm("openai")

    async def nested() -> str:
        return llm.query("nested")  # a callback on the private loop calling sync code

    assert run_on_private_loop(nested()) == "[sub] nested"


def test_a_script_exits_quietly_with_its_clients_closed(
    provider: str, llm_server: FakeLLMServer
) -> None:
    script = textwrap.dedent(
        f"""
        import gc, warnings
        warnings.simplefilter("always")
        from rlm import interface_from_spec
        llm = interface_from_spec(
            "{provider}:sub-model", api_key="{TEST_API_KEY}",
            base_url="{base_url_for(llm_server, provider)}",
        )
        print(llm.query("one"), llm.query("two"))
        del llm
        gc.collect()
        """
    )
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[sub] one [sub] two"
    assert done.stderr == ""  # no unclosed clients, no "Event loop is closed"


def test_sync_rlm_query_still_runs_on_its_own_loop(
    llm_server: FakeLLMServer, make_llm: MakeLLM
) -> None:
    from rlm import RLM

    rlm = RLM(make_llm("openai", model="root-model"), make_llm("openai"))
    answer, trajectory = rlm.query("what?", ["alpha", "beta"])
    assert "[sub]" in answer and trajectory[0]["subcalls"] == 2
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()


def test_closing_the_private_loop_closes_its_clients(provider: str, make_llm: MakeLLM) -> None:
    llm = make_llm(provider)
    assert llm.query("before") == "[sub] before"
    loop = _private_loop.loop()
    client = llm._clients[loop].client
    _private_loop.close()  # what runs at interpreter exit
    assert loop.is_closed()
    http = client.http if provider == "gemini" else client
    assert http.is_closed if provider == "gemini" else http.is_closed()
    assert llm.query("after") == "[sub] after"  # a new private loop, a new client
