"""Money: the price table, each call's cost from the usage its provider reports (cached input
priced as cached) on both call paths, and the `max_cost` budget that stops a run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import MakeLLM
from fake_llm import FakeLLMServer

from rlm import (
    RLM,
    ConfigurationError,
    Event,
    Message,
    Price,
    RunFinished,
    load_prices,
    load_prices_file,
    price_for,
)
from rlm._pricing import format_cost
from rlm.lane import lane_for
from tests.scripted_llm import ScriptedLLM, repl

PROVIDERS = ["openai", "anthropic", "gemini"]

# -- the arithmetic -------------------------------------------------------------------------------


def test_cached_input_is_priced_as_cached_and_cache_writes_as_writes() -> None:
    price = Price(input=2.0, cached_input=0.5, output=8.0, cache_write=2.5)
    # 1M input of which 400k cached and 100k written, 10k output:
    # 500k * 2 + 400k * 0.5 + 100k * 2.5 + 10k * 8, per million.
    assert price.cost(1_000_000, 10_000, 400_000, 100_000) == pytest.approx(1.0 + 0.2 + 0.25 + 0.08)
    assert price.cost(1_000_000, 0) == pytest.approx(2.0)  # nothing cached: all at input
    assert Price(1.0, 0.1, 1.0).cost(100, 0, 0, 100) == pytest.approx(1e-4)  # writes at input


def test_the_shipped_table_prices_the_default_models_and_knows_what_it_does_not_know() -> None:
    assert price_for("openai:gpt-4o") == Price(2.50, 1.25, 10.00)
    assert price_for("openai:gpt-4o-mini") == Price(0.15, 0.075, 0.60)
    assert price_for("openai:gpt-4o-2024-08-06") == price_for("openai:gpt-4o")  # a snapshot
    assert price_for("anthropic:claude-sonnet-4-5-20250929") == price_for(
        "anthropic:claude-sonnet-4-5"
    )
    assert price_for("gemini:models/gemini-2.5-flash") == price_for("gemini:gemini-2.5-flash")
    assert price_for("openai:some-local-model") is None  # unknown, not free
    assert price_for("openai:gpt-4o", {}) is None  # a table of one's own replaces the lookup
    assert format_cost(None) == "unknown"
    assert format_cost(0.001234) == "$0.0012" and format_cost(12.345) == "$12.35"


def test_price_tables_from_json_and_toml(tmp_path: Path) -> None:
    table = load_prices('{"openai:mine": {"input": 1, "output": 2}}')
    assert table == {"openai:mine": Price(1.0, 1.0, 2.0)}  # no cached price: the input price
    toml = tmp_path / "prices.toml"
    toml.write_text('["anthropic:mine"]\ninput = 3\ncached_input = 0.3\noutput = 15\n')
    assert load_prices_file(toml) == {"anthropic:mine": Price(3.0, 0.3, 15.0)}
    for bad in (
        "[1, 2]",
        '{"no-provider": {"input": 1, "output": 1}}',
        '{"openai:x": {"input": -1, "output": 1}}',
        '{"openai:x": {"input": 1}}',
        '{"openai:x": {"input": 1, "output": 1, "outptu": 2}}',
        "not json",
    ):
        with pytest.raises(ConfigurationError, match="price table could not be read"):
            load_prices(bad)
    with pytest.raises(ConfigurationError, match="nowhere"):
        load_prices_file(tmp_path / "nowhere.json")


# -- cached tokens on both paths ------------------------------------------------------------------


def _cache_half(kind: str, tokens: int) -> tuple[int, int]:
    return tokens // 2, 1 if tokens > 2 else 0


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_cached_tokens_are_read_alike_on_the_sdk_path_and_the_lane(
    provider: str, llm_server: FakeLLMServer, make_llm: MakeLLM
) -> None:
    llm_server.cache_usage = _cache_half
    messages: list[Message] = [{"role": "user", "content": "one two three four five six seven"}]
    sdk = make_llm(provider)
    by_sdk = await sdk.chat_async(messages)
    lane_llm = make_llm(provider)
    lane = lane_for(lane_llm, ceiling=4)
    assert lane is not None
    async with lane.opened():
        by_lane = await lane.complete(messages)
    assert by_lane == by_sdk
    assert by_sdk.input_tokens == 7 and by_sdk.cached_input_tokens == 3
    # Only Anthropic reports cache writes; the others' share of them is plain input.
    assert by_sdk.cache_write_tokens == (1 if provider == "anthropic" else 0)
    assert sdk.usage == lane_llm.usage and sdk.usage.cached_input_tokens == 3


PRICES = {
    f"{provider}:{model}": Price(input=1_000.0, cached_input=100.0, output=4_000.0)
    for provider in PROVIDERS
    for model in ("root-model", "sub-model")
}
MAP = repl("r = parallel_query('Part: {chunk}', context)", "FINAL_VAR(r)")


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_run_costs_the_same_through_the_sdk_path_and_the_lane(
    provider: str, llm_server: FakeLLMServer, make_llm: MakeLLM
) -> None:
    llm_server.cache_usage = _cache_half
    finished: dict[bool, RunFinished] = {}
    for use_lane in (False, True):
        llm_server.script_root(MAP)
        events: list[Event] = []
        engine = RLM(
            make_llm(provider, "root-model"),
            make_llm(provider, "sub-model"),
            subcall_lane=use_lane,
            prices=PRICES,
        )
        _, trajectory = await engine.query_async(
            "q", ["alpha beta", "gamma delta epsilon"], on_event=events.append
        )
        finished[use_lane] = run = next(e for e in events if isinstance(e, RunFinished))
        assert run.subcalls == 2 and run.cached_input_tokens > 0
        assert run.cost is not None and run.cost > 0
        assert sum(step["cost"] for step in trajectory) == pytest.approx(run.cost)
        cached = run.cached_input_tokens
        uncached = run.input_tokens - cached
        most = (uncached * 1_000 + cached * 100 + run.output_tokens * 4_000) / 1e6
        assert run.cost <= most + 1e-12  # no cache write is priced above the input price
    assert finished[True].cost == pytest.approx(finished[False].cost)
    assert finished[True].cached_input_tokens == finished[False].cached_input_tokens


# -- the max_cost budget --------------------------------------------------------------------------

# ScriptedLLM bills 10 input and 5 output tokens a call: $1 + $1 at these prices.
DEAR = {"scripted:scripted": Price(input=100_000.0, cached_input=10_000.0, output=200_000.0)}


def test_max_cost_stops_the_run_before_more_sub_calls() -> None:
    code = (
        "r = parallel_query('{chunk}', ['a'] * 50)\n"
        "print('refused', sum(x.startswith(\"Error: the run's max_cost budget\") for x in r))"
    )
    root = ScriptedLLM(repl(code), repl("print('more')"), "FINAL(never)")
    sub = ScriptedLLM()
    events: list[Event] = []
    answer, trajectory = RLM(root, sub, max_parallel_calls=1, max_cost=11.0, prices=DEAR).query(
        "q", "c", on_event=events.append
    )
    run = next(e for e in events if isinstance(e, RunFinished))
    # $2 for the root's first reply, then sub-calls at $2 each while the committed spend and
    # the next call's reservation ($0.10 for a one-byte prompt) fit under $11: five of them.
    assert len(sub.seen) == 5 and run.subcalls == 5
    assert "refused 45" in "\n".join(m["content"] for m in root.seen[1])
    assert "money budget is used up" in root.seen[1][-1]["content"]
    assert run.stopped_by == "max_cost"
    assert run.cost == pytest.approx(2 + 5 * 2 + 2)  # and the last-chance reply
    assert [step["cost"] for step in trajectory] == pytest.approx([12.0, 2.0])
    assert answer  # the last-chance reply is the answer


def test_max_cost_needs_a_price_for_both_models() -> None:
    with pytest.raises(ConfigurationError, match="max_cost needs a price for scripted:scripted"):
        RLM(ScriptedLLM(), max_cost=1.0)
    with pytest.raises(ConfigurationError, match="max_cost must be more than 0"):
        RLM(ScriptedLLM(), max_cost=0.0, prices=DEAR)


def test_an_unpriced_model_costs_unknown_not_zero() -> None:
    events: list[Event] = []
    _, trajectory = RLM(ScriptedLLM("FINAL(ok)")).query("q", "c", on_event=events.append)
    run = next(e for e in events if isinstance(e, RunFinished))
    assert run.cost is None and trajectory[0]["cost"] is None
    json.dumps(trajectory)  # still JSON Lines material
