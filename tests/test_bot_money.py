"""Money in the bot: runs costed at the operator's price table and stored with their cost, a
workspace's daily spend capping its runs and then refusing new ones in plain words, and the
spend shown in `/rlm usage` to admins only."""

from __future__ import annotations

import json

import pytest
from bot_harness import mention
from pydantic import ValidationError

from bot.settings import Settings
from bot.slack import admin_messages, messages

ASKED = "*<@U1> asked:*"
# Dear enough that one root call of the fake (a few hundred words in) costs about $0.3.
PRICES = json.dumps(
    {
        "openai:root-model": {"input": 1000, "cached_input": 100, "output": 4000},
        "openai:sub-model": {"input": 1000, "output": 4000},
    }
)


def code(text: str) -> str:
    return f"Working on it.\n```repl\n{text}\n```"


async def test_the_days_money_caps_a_run_then_refuses_new_ones(make_bot, slack, llm_server):
    bot = await make_bot(rlm_daily_cost_usd=0.05, rlm_prices=PRICES)
    slack.add_message("C1", "something to read", user="U2")
    llm_server.cache_usage = lambda kind, tokens: (tokens // 2, 0)
    llm_server.script_root(code("x = 1"), code("y = 2"), "FINAL(best so far)")
    await bot.events.command("ask first?")
    await bot.settle()

    root = slack.message_with("C1", ASKED)
    last = slack.posts("C1", thread_ts=root["ts"])[-1]
    assert messages.STOPPED_BY_DAILY_SPEND in last and "$" not in last
    [run] = await bot.store.list_runs()
    assert run.stopped_by == "max_cost"
    assert run.cost_usd is not None and run.cost_usd >= 0.05
    assert 0 < run.cached_input_tokens < run.input_tokens
    iterations = await bot.store.list_iterations(run.id)
    assert sum(i.cost_usd or 0 for i in iterations) == pytest.approx(run.cost_usd)
    assert llm_server.count("root") == 2  # the first reply, then the last-chance one

    llm_server.reset_stats()
    reply = await bot.events.command("ask second?", user_id="U2")
    assert reply.status == 200
    thread = slack.add_message("C1", "a thread about plans", user="U1")
    await bot.events.event(mention("C1", "<@UBOT> and now?", slack.next_ts(), thread_ts=thread))
    await bot.settle()

    assert slack.ephemerals("U2") == [messages.DAILY_SPEND_USED]
    assert slack.posts("C1", thread_ts=thread) == [messages.DAILY_SPEND_USED]
    assert "$" not in messages.DAILY_SPEND_USED and "RLM_" not in messages.DAILY_SPEND_USED
    assert len(await bot.store.list_runs()) == 1
    assert llm_server.count("any") == 0


async def test_a_run_is_capped_by_its_own_money_limit(make_bot, slack, llm_server):
    bot = await make_bot(rlm_max_run_cost_usd=0.01, rlm_prices=PRICES)
    slack.add_message("C1", "something to read", user="U2")
    llm_server.script_root(code("x = 1"), "FINAL(best so far)")
    await bot.events.command("ask first?")
    await bot.settle()
    root = slack.message_with("C1", ASKED)
    assert messages.STOPPED_BY_SPEND in slack.posts("C1", thread_ts=root["ts"])[-1]
    [run] = await bot.store.list_runs()
    assert (run.status, run.stopped_by) == ("finished", "max_cost")
    # The next question starts: only the day's limit refuses runs.
    llm_server.script_root("FINAL(fine)")
    await bot.events.command("ask again?")
    await bot.settle()
    assert len(await bot.store.list_runs()) == 2


async def test_usage_shows_the_spend_to_admins_only(make_bot, slack, llm_server):
    slack.add_user("UADMIN", "Ada", admin=True)
    bot = await make_bot(rlm_daily_cost_usd=10, rlm_max_run_cost_usd=2.5, rlm_prices=PRICES)
    slack.add_message("C1", "something to read", user="U2")
    llm_server.script_root("FINAL(done)")
    await bot.events.command("ask anything?")
    await bot.settle()
    [run] = await bot.store.list_runs()
    assert run.cost_usd is not None and run.cost_usd > 0

    admin = (await bot.events.command("usage", user_id="UADMIN")).json()["text"]
    spent = admin_messages.spend_report(cost_today=run.cost_usd, daily_cost=10, max_run_cost=2.5)
    assert spent in admin and "of $10.00 a day" in admin
    assert "Each run may spend at most: $2.50" in admin
    member = (await bot.events.command("usage", user_id="U2")).json()["text"]
    assert "$" not in member and "Spent today" not in member


def test_a_money_limit_needs_a_price_for_every_model() -> None:
    required = {"slack_bot_token": "xoxb-x", "slack_signing_secret": "s"}
    with pytest.raises(ValidationError, match="openai:local has none"):
        Settings(**required, rlm_daily_cost_usd=5, rlm_sub_model="openai:local")
    with pytest.raises(ValidationError, match="price table could not be read"):
        Settings(**required, rlm_prices="{not json")
    priced = Settings(**required, rlm_max_run_cost_usd=1, rlm_prices=PRICES)
    assert priced.prices["openai:root-model"].input == 1000
    assert priced.prices["openai:gpt-4o"].output == 10.0  # the shipped table stays under it
    assert Settings(**required, rlm_sub_model="openai:local").prices  # no limit: no need
