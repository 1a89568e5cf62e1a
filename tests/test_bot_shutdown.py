"""Stopping gracefully (what SIGTERM leads to in rlm-bot): runs under way may finish within
the grace period, runs still waiting their turn do not start, and what is left is interrupted
and told once."""

from __future__ import annotations

from bot_harness import wait_until

from bot.slack import messages


async def test_within_the_grace_a_run_finishes_and_a_waiting_one_does_not_start(
    make_bot, slack, llm_server
):
    bot = await make_bot(rlm_max_runs_per_workspace=1)
    slack.add_message("C1", "something to read", user="U2")
    llm_server.root_latency = 1.5
    await bot.events.command("ask first?")
    await wait_until(lambda: llm_server.count("root") == 1, seconds=20)
    await bot.events.command("ask second?", user_id="U2")
    await wait_until(lambda: messages.queued(1, 1) in slack.posts("C1"), seconds=20)

    assert await bot.services.finish(20) == 0  # all done well within the grace
    first_run, second_run = await bot.store.list_runs()
    assert (first_run.status, second_run.status) == ("finished", "interrupted")
    assert llm_server.count("root") == 1  # the second never started thinking
    # One status message: it said the run waited, and now says it was interrupted.
    [status] = slack.thread_view("C1", slack.message_with("C1", "*<@U2> asked:*")["ts"])
    assert messages.INTERRUPTED in status["seen"] and status.get("edits")


async def test_past_the_grace_the_run_is_interrupted_and_told_once(make_bot, slack, llm_server):
    bot = await make_bot()
    slack.add_message("C1", "something to read", user="U2")
    llm_server.root_latency = 30.0
    await bot.events.command("ask slow?")
    await wait_until(lambda: llm_server.count("root") == 1, seconds=20)
    assert await bot.services.finish(0.5) == 1  # still going when the grace ran out
    await bot.close()
    root = slack.message_with("C1", "*<@U1> asked:*")

    def told() -> int:  # the status message now says so, in the thread's one message
        return sum(
            m["seen"].count(messages.INTERRUPTED) for m in slack.thread_view("C1", root["ts"])
        )

    assert told() == 1
    llm_server.root_latency = 0.0
    bot = await make_bot()
    [run] = await bot.store.list_runs()
    assert run.status == "interrupted"
    assert told() == 1
