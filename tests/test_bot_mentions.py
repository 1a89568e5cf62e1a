"""`@rlm` mentions end to end: where the context comes from, where the answer goes, retries."""

from __future__ import annotations

from bot_harness import file_shared, mention
from slack_runs import ANSWER_FOOTER
from slack_server import BOT_USER

from bot.slack import messages


def sub_prompts(llm_server) -> str:
    return "\n".join(r.prompt for r in llm_server.requests if r.kind == "sub")


async def test_a_top_level_mention_reads_the_channel_and_answers_under_it(bot, slack, llm_server):
    slack.add_message("C1", "Standup moved to 10:00.", user="U2")
    text = f"<@{BOT_USER}> when is standup?"
    ts = slack.add_message("C1", text, user="U1")
    llm_server.sub_responder = lambda prompt: "At 10:00."

    reply = await bot.events.event(mention("C1", text, ts))
    assert reply.status == 200 and reply.seconds < 1.0
    await bot.settle()

    thread = slack.posts("C1", thread_ts=ts)
    assert thread[-1].startswith("At 10:00.") and ANSWER_FOOTER.search(thread[-1])
    assert len(slack.posts("C1")) == len(thread)  # nothing at the top level
    context = sub_prompts(llm_server)
    assert "bob: Standup moved to 10:00." in context
    assert "when is standup?" not in context  # the mention is the question, not context
    [run] = await bot.store.list_runs()
    assert (run.trigger, run.thread_ts, run.question) == ("mention", ts, "when is standup?")
    assert run.status == "finished"


async def test_a_mention_in_a_thread_reads_only_that_thread_and_its_files(bot, slack, llm_server):
    slack.add_message("C1", "Unrelated chatter elsewhere.", user="U2")
    parent = slack.add_message("C1", "Draft budget attached.", user="U2")
    slack.add_message("C1", "Marketing gets 40%.", user="U1", thread_ts=parent)
    slack.add_file(
        "F1", "budget.csv", b"team,share\nmarketing,40\nsales,60\n",
        channel_id="C1", user="U2", mimetype="text/csv", thread_ts=parent,
    )  # fmt: skip
    await bot.events.event(file_shared("C1", "F1", user="U2"))
    await bot.settle()
    text = f"<@{BOT_USER}> what does sales get?"
    ts = slack.add_message("C1", text, user="U1", thread_ts=parent)

    await bot.events.event(mention("C1", text, ts, thread_ts=parent))
    await bot.settle()

    context = sub_prompts(llm_server)
    assert "Draft budget attached." in context and "Marketing gets 40%." in context
    assert "# File: budget.csv" in context and "sales,60" in context
    assert "Unrelated chatter" not in context
    answer = slack.posts("C1", thread_ts=parent)[-1]
    assert ANSWER_FOOTER.search(answer)
    [run] = await bot.store.list_runs()
    assert run.thread_ts == parent and run.status == "finished"


async def test_a_follow_up_in_a_run_thread_sees_the_earlier_answer(bot, slack, llm_server):
    slack.add_message("C1", "The budget is 10k.", user="U2")
    llm_server.sub_responder = lambda prompt: "It is 10k."
    await bot.events.command("ask what is the budget?")
    await bot.settle()
    root = slack.message_with("C1", "*<@U1> asked:*")
    text = f"<@{BOT_USER}> who said so?"
    ts = slack.add_message("C1", text, user="U1", thread_ts=root["ts"])
    llm_server.requests.clear()
    await bot.events.event(mention("C1", text, ts, thread_ts=root["ts"]))
    await bot.settle()
    assert "It is 10k." in sub_prompts(llm_server)
    assert [r.status for r in await bot.store.list_runs()] == ["finished", "finished"]


async def test_a_retried_delivery_never_starts_a_second_run(bot, slack, llm_server):
    slack.add_message("C1", "Some history.", user="U2")
    text = f"<@{BOT_USER}> summarize"
    ts = slack.add_message("C1", text, user="U1")
    event = mention("C1", text, ts)
    first = await bot.events.event(event, event_id="EvSAME")
    retry = await bot.events.event(event, event_id="EvSAME", retry_num=1)
    await bot.settle()
    again = await bot.events.event(event, event_id="EvSAME", retry_num=2)
    await bot.settle()
    assert first.status == retry.status == again.status == 200
    assert len(await bot.store.list_runs()) == 1
    assert llm_server.count("root") == 1


async def test_the_message_event_that_duplicates_a_mention_starts_nothing(bot, slack, llm_server):
    slack.add_message("C1", "Some history.", user="U2")
    text = f"<@{BOT_USER}> summarize"
    ts = slack.add_message("C1", text, user="U1")
    message = {"type": "message", "channel": "C1", "user": "U1", "text": text, "ts": ts}
    assert (await bot.events.event(message)).status == 200
    assert (await bot.events.event(mention("C1", text, ts))).status == 200
    await bot.settle()
    assert len(await bot.store.list_runs()) == 1
    assert llm_server.count("root") == 1


async def test_an_empty_mention_gets_usage_in_its_thread(bot, slack, llm_server):
    text = f"<@{BOT_USER}>   "
    ts = slack.add_message("C1", text, user="U1")
    await bot.events.event(mention("C1", text, ts))
    await bot.settle()
    assert slack.posts("C1", thread_ts=ts) == [messages.MENTION_USAGE]
    assert await bot.store.list_runs() == []
    assert llm_server.count("any") == 0


async def test_events_of_other_kinds_are_acknowledged_and_ignored(bot, slack):
    edit = {"type": "message", "subtype": "message_changed", "channel": "C1", "ts": "1.0"}
    reply = await bot.events.event(edit)
    assert reply.status == 200
    await bot.settle()
    assert slack.posts() == []
