"""Budgets: a run stopped by a per-run limit answers with the best it has and names the limit;
a workspace's daily tokens cap its runs and then refuse new ones; `/rlm usage` reports it."""

from __future__ import annotations

import time

import pytest
from bot_harness import mention, wait_until

from bot.slack import admin_messages, messages

ASKED = "*<@U1> asked:*"
BEST = "FINAL(best so far)"


def code(text: str) -> str:
    return f"Working on it.\n```repl\n{text}\n```"


@pytest.mark.parametrize(
    ("setting", "value", "limit", "script"),
    [
        ("rlm_max_iterations", 2, "max_iterations", [code("x = 1"), code("y = 2"), BEST]),
        (
            "rlm_max_subcalls",
            2,
            "max_subcalls",
            [code("answers = [llm_query(f'part {i}') for i in range(3)]\nprint(answers)"), BEST],
        ),
        ("rlm_max_run_tokens", 50, "max_tokens", [code("x = 1"), BEST]),
        ("rlm_max_run_seconds", 0.5, "max_seconds", [code("import time\ntime.sleep(0.6)"), BEST]),
    ],
)
async def test_a_run_stopped_by_a_budget_answers_and_names_the_limit(
    make_bot, slack, llm_server, setting, value, limit, script
):
    bot = await make_bot(**{setting: value})
    slack.add_message("C1", "something to read", user="U2")
    llm_server.script_root(*script)
    await bot.events.command("ask anything?")
    await bot.settle()

    root = slack.message_with("C1", ASKED)
    last = slack.posts("C1", thread_ts=root["ts"])[-1]
    line = messages.stopped_by(limit)
    assert last.startswith(f"best so far\n\n{line}\n\n_") and last.endswith(" s_")
    [run] = await bot.store.list_runs()
    assert (run.status, run.stopped_by, run.answer) == ("finished", limit, "best so far")
    iterations = await bot.store.list_iterations(run.id)
    assert len(iterations) == run.iterations == len(script)
    assert f"_{len(script)} steps ·" in last
    if limit == "max_subcalls":
        assert run.subcalls == 2 and "budget is used up" in iterations[0].output


OVER_THE_CAPS = """\
for request in (lambda: parallel_query('{chunk}', list('abcd')), lambda: llm_query('x' * 101)):
    try:
        request()
    except RuntimeError as e:
        print(e)"""


async def test_the_request_caps_reach_the_engine(make_bot, slack, llm_server):
    bot = await make_bot(rlm_max_map_chunks=3, rlm_max_prompt_bytes=100)
    slack.add_message("C1", "something to read", user="U2")
    llm_server.script_root(code(OVER_THE_CAPS), BEST)
    await bot.events.command("ask anything?")
    await bot.settle()

    [run] = await bot.store.list_runs()
    assert (run.status, run.answer, run.subcalls) == ("finished", "best so far", 0)
    [output, _] = [i.output for i in await bot.store.list_iterations(run.id)]
    assert "parallel_query takes at most 3 chunks per call (got 4)" in output
    assert "llm_query takes a prompt of at most 100 bytes (got 101)" in output
    assert llm_server.count("sub") == 0


async def test_the_daily_budget_caps_a_run_then_refuses_new_ones(make_bot, slack, llm_server):
    bot = await make_bot(rlm_daily_tokens=200)
    slack.add_message("C1", "something to read", user="U2")
    llm_server.script_root(code("x = 1"), BEST)
    await bot.events.command("ask first?")
    await bot.settle()
    root = slack.message_with("C1", ASKED)
    last = slack.posts("C1", thread_ts=root["ts"])[-1]
    assert messages.stopped_by("daily_tokens") in last
    [run] = await bot.store.list_runs()
    assert run.stopped_by == "max_tokens" and run.input_tokens + run.output_tokens >= 200

    llm_server.reset_stats()
    posts_before = len(slack.posts())
    reply = await bot.events.command("ask second?", user_id="U2")
    assert reply.status == 200
    thread = slack.add_message("C1", "a thread about plans", user="U1")
    await bot.events.event(mention("C1", "<@UBOT> and now?", slack.next_ts(), thread_ts=thread))
    await bot.settle()

    refusal = messages.DAILY_LIMIT_REACHED
    assert slack.ephemerals("U2") == [refusal]  # the slash command: only the asker is told
    assert slack.posts("C1", thread_ts=thread) == [refusal]  # the mention: in its thread
    assert len(slack.posts()) == posts_before + 1
    assert len(await bot.store.list_runs()) == 1
    assert llm_server.count("any") == 0


async def test_a_run_waiting_its_turn_finds_the_day_used_up(make_bot, slack, llm_server):
    bot = await make_bot(rlm_daily_tokens=200, rlm_max_runs_per_workspace=1)
    slack.add_message("C1", "something to read", user="U2")
    llm_server.root_latency = 0.5
    llm_server.script_root(code("x = 1"), BEST)
    await bot.events.command("ask first?")
    await wait_until(lambda: llm_server.count("root") == 1)
    await bot.events.command("ask second?", user_id="U2")
    await bot.settle()

    first, second = await bot.store.list_runs()
    assert first.status == "finished"
    assert (second.status, second.error) == ("failed", "daily token budget used up")
    root = slack.message_with("C1", "*<@U2> asked:*")
    used = first.input_tokens + first.output_tokens
    assert slack.thread_texts("C1", root["ts"])[-1] == messages.DAILY_LIMIT_REACHED
    assert used >= 200
    assert llm_server.count("root") == 2  # the first run's two calls; none for the second


async def test_usage_reports_today_in_flight_and_the_budgets(make_bot, slack, llm_server):
    bot = await make_bot(
        rlm_daily_tokens=1_000_000,
        rlm_max_subcalls=50,
        rlm_max_run_tokens=0,
        rlm_max_run_seconds=90,
    )
    slack.add_message("C1", "something to read", user="U2")
    llm_server.root_latency = 0.5
    await bot.events.command("ask anything?")
    await wait_until(lambda: llm_server.count("root") == 1)

    during = (await bot.events.command("usage")).json()
    assert during["response_type"] == "ephemeral"
    assert "1 run today, 1 in flight now" in during["text"]
    await bot.settle()
    [run] = await bot.store.list_runs()
    tokens = run.input_tokens + run.output_tokens
    after = (await bot.events.command("usage")).json()["text"]
    assert after.startswith(
        admin_messages.usage_report(
            tokens_today=tokens,
            daily_tokens=1_000_000,
            runs_today=1,
            in_flight=0,
            max_iterations=20,
            max_subcalls=50,
            max_run_tokens=0,
            max_run_seconds=90,
        )
    )
    # The sub-model's provider key has an adaptive limit, shown with its width now.
    limits = [line for line in after.splitlines() if f"127.0.0.1:{llm_server.port}" in line]
    assert "*Provider limits*" in after and len(limits) == 1
    assert "sub-calls at once now (ceiling 256)" in limits[0]
    assert f"Tokens used: {tokens:,} of 1,000,000 a day" in after
    assert "at most: 20 steps, 50 sub-calls, no limit on tokens, 90 seconds" in after
    other = (await bot.events.command("usage", team_id="T2")).json()["text"]
    assert "Tokens used: 0 of" in other and "0 runs today, 0 in flight" in other
    assert "`/rlm usage`" in (await bot.events.command("help")).json()["text"]


async def test_a_provider_that_hangs_past_the_time_budget_is_cut_off(make_bot, slack, llm_server):
    bot = await make_bot(rlm_max_run_seconds=0.5, rlm_provider_timeout=0.3, rlm_provider_retries=20)
    slack.add_message("C1", "something to read", user="U2")
    llm_server.root_latency = 30.0  # every root call outlasts the client's timeout
    started = time.monotonic()
    await bot.events.command("ask anything?")
    await bot.settle(10)
    # The deadline: the time budget, one provider timeout, a little slack (here 0.5 s).
    assert time.monotonic() - started < 0.5 + 0.3 + 0.5 + 1.0

    root = slack.message_with("C1", ASKED)
    assert slack.thread_texts("C1", root["ts"]) == [messages.OUT_OF_TIME]
    [run] = await bot.store.list_runs()
    assert (run.status, run.stopped_by, run.error) == ("failed", "max_seconds", "time budget")
    assert llm_server.count("root") >= 2  # the client timed out and tried again meanwhile
