"""`/rlm` end to end: signed requests in, the loopback Slack and LLM servers behind the app."""

from __future__ import annotations

import logging
import time

from bot_harness import SlackEvents
from slack_server import BOT_TOKEN, SlackServer

from bot.slack import admin_messages, messages

ANSWER_PREFIX = "*<@U1> asked:*"


def sub_prompts(llm_server) -> str:
    return "\n".join(r.prompt for r in llm_server.requests if r.kind == "sub")


async def test_help_usage_and_unknown_words_answer_at_once_and_post_nothing(bot, slack):
    for text in ("", "help", "ask", "ask    "):
        reply = await bot.events.command(text)
        assert reply.status == 200
        assert reply.json()["text"] == messages.USAGE
    reply = await bot.events.command("summarize everything")
    assert reply.json()["text"] == messages.unknown_subcommand("summarize")
    await bot.settle()
    assert slack.calls_to("chat.postMessage") == []
    assert await bot.store.list_runs() == []


async def test_ask_posts_the_question_then_progress_and_answer_in_its_thread(
    bot, slack, llm_server, caplog
):
    caplog.set_level(logging.INFO)
    slack.add_message("C1", "The launch is on Friday &amp; the demo on Thursday.", user="U1")
    slack.add_message(
        "C1",
        "Noted <@U1>, see <https://example.com/plan|the plan> in <#C9|random> <!here>",
        user="U2",
    )
    llm_server.sub_responder = lambda prompt: "The launch is on Friday."

    reply = await bot.events.command("ask when is the launch?")
    assert reply.status == 200 and reply.body == ""
    assert reply.seconds < 1.0
    await bot.settle()

    root = slack.message_with("C1", ANSWER_PREFIX)
    assert root["text"] == messages.question_root("U1", "when is the launch?")
    # Two messages in the thread: the status, collapsed to a summary, and the answer.
    status, answer = slack.thread_view("C1", root["ts"])
    assert status["seen"].startswith(":white_check_mark: Answered in 1 step, ")
    assert "read 2 messages" in status["seen"] and "Show steps" in status["seen"]
    assert answer["text"].startswith("The launch is on Friday.")
    assert answer["text"].endswith(" s_") and "_1 step · " in answer["text"]
    # While it ran, the status was edited in place and showed the step.
    updates = [str(c.params.get("blocks")) for c in slack.calls_to("chat.update")]
    assert any("*Step 1:*" in u for u in updates)
    # Every post but the question itself went into the thread, and only two of them.
    assert len(slack.posts("C1")) == 3 and len(slack.posts("C1", thread_ts=root["ts"])) == 2

    context = sub_prompts(llm_server)
    assert "Alice: The launch is on Friday & the demo on Thursday." in context
    assert "bob: Noted @Alice, see the plan (https://example.com/plan) in #random @here" in context
    assert "asked:" not in context  # the bot's own question post is not context

    [run] = await bot.store.list_runs()
    assert (run.status, run.trigger, run.thread_ts) == ("finished", "command", root["ts"])
    assert (run.team_id, run.channel_id, run.user_id) == ("T1", "C1", "U1")
    assert run.question == "when is the launch?"
    assert run.answer == "The launch is on Friday."
    assert run.iterations == 1 and run.subcalls == 1 and run.input_tokens > 0
    [iteration] = await bot.store.list_iterations(run.id)
    assert "parallel_query" in iteration.code and iteration.subcalls == 1
    # The bot token went to the Slack server and nowhere else.
    assert all(c.token == BOT_TOKEN for c in slack.calls)
    # Logs say what happened, never what people wrote.
    assert "run 1 finished" in caplog.text
    assert "launch" not in caplog.text.lower()


async def test_history_is_paginated_with_cursors_and_bounded(make_bot, slack, llm_server):
    for i in range(450):
        slack.add_message("C1", f"message number {i}", user="U1" if i % 2 else "U2")
    bot = await make_bot(rlm_history_messages=300)
    await bot.events.command("ask what was said?")
    await bot.settle()

    history = slack.calls_to("conversations.history")
    assert len(history) == 2
    assert "cursor" not in history[0].params and history[1].params["cursor"]
    context = sub_prompts(llm_server)
    assert "message number 449" in context and "message number 150\n" in context
    assert "message number 149\n" not in context
    # Oldest first, as people read a channel.
    assert context.index("message number 150\n") < context.index("message number 449")
    # One users.info per person, however many messages they wrote.
    assert sorted(c.params["user"] for c in slack.calls_to("users.info")) == ["U1", "U2"]


async def test_history_older_than_the_age_limit_is_left_out(make_bot, slack, llm_server):
    slack.add_message("C1", "ancient decision", user="U1", ts=f"{time.time() - 10 * 86400:.6f}")
    slack.add_message("C1", "recent decision", user="U1")
    bot = await make_bot(rlm_history_days=7)
    await bot.events.command("ask what was decided?")
    await bot.settle()
    context = sub_prompts(llm_server)
    assert "recent decision" in context and "ancient decision" not in context
    assert float(slack.calls_to("conversations.history")[0].params["oldest"]) > 0


async def test_thread_replies_are_part_of_channel_history(bot, slack, llm_server):
    parent = slack.add_message("C1", "Which venue?", user="U1")
    slack.add_message("C1", "The harbour hall.", user="U2", thread_ts=parent)
    slack.add_message("C1", "Booked.", user="U1")
    await bot.events.command("ask where is it?")
    await bot.settle()
    context = sub_prompts(llm_server)
    assert "Alice: Which venue?\n    ↳ [" in context
    assert context.index("The harbour hall.") < context.index("Booked.")


async def test_forged_or_stale_signatures_are_refused_and_nothing_runs(bot, slack):
    forged = SlackEvents(bot.http.url, signing_secret="not-the-secret")
    try:
        reply = await forged.command("ask anything?")
    finally:
        await forged.close()
    assert reply.status == 401
    stale = bot.events.sign("token=x", timestamp=1_000_000_000)
    reply = await bot.events.send("text=ask", "application/x-www-form-urlencoded", stale)
    assert reply.status == 401
    await bot.settle()
    assert slack.calls_to("chat.postMessage") == []
    assert await bot.store.list_runs() == []


async def test_not_in_channel_is_explained_to_the_asker_only(bot, slack: SlackServer):
    slack.add_channel("C2", "secret-plans", member=False)
    reply = await bot.events.command("ask what are the plans?", channel_id="C2")
    assert reply.status == 200
    await bot.settle()
    # chat.postEphemeral fails too outside the channel: the response URL still reaches them.
    assert slack.ephemerals() == [messages.NOT_IN_CHANNEL]
    assert slack.calls_to("response_url")[0].params["response_type"] == "ephemeral"
    assert slack.posts() == []
    # The question was stored before anything was posted; it ended there, unseen.
    [run] = await bot.store.list_runs()
    assert (run.status, run.error_kind, run.thread_ts) == ("failed", "user:slack", None)


async def test_missing_history_scope_is_told_to_users_briefly_and_to_the_operator_with_the_fix(
    bot, slack, llm_server, caplog
):
    slack.add_channel("G1", "private", private=True)
    slack.add_message("G1", "hidden", user="U1")
    slack.missing_scopes = {"groups:history"}
    await bot.events.command("ask what is hidden?", channel_id="G1")
    await bot.settle()
    root = slack.message_with("G1", ANSWER_PREFIX)
    [status] = slack.thread_view("G1", root["ts"])
    assert status["text"] == messages.MISSING_SCOPE_FOR_USER and "Retry" in status["seen"]
    assert slack.ephemerals("U1") == []
    [run] = await bot.store.list_runs()
    assert run.status == "failed" and run.error == "slack: missing_scope groups:history"
    assert run.error_kind == "operator:missing_scope"
    assert [r.id for r in await bot.store.operator_problems("T1")] == [run.id]
    assert admin_messages.OPERATOR_FIXES["operator:missing_scope"] in caplog.text
    assert "groups:history" in caplog.text
    assert llm_server.count("any") == 0


async def test_rate_limited_calls_are_retried_after_retry_after(bot, slack):
    slack.add_message("C1", "something to read", user="U1")
    slack.rate_limit("chat.postMessage", times=1, retry_after=0)
    await bot.events.command("ask anything?")
    await bot.settle()
    posts = [c for c in slack.calls if c.method == "chat.postMessage"]
    assert posts[0].status == 429 and posts[1].status == 200
    assert posts[0].params["text"] == posts[1].params["text"]
    [run] = await bot.store.list_runs()
    assert run.status == "finished"


async def test_a_refused_key_ends_the_run_with_one_sentence_and_the_fix_in_the_log(
    bot, slack, llm_server, caplog
):
    slack.add_message("C1", "something to read", user="U1")

    def first_iteration(conversation):
        llm_server.fail_next(1, 401, kind="root")  # the second root call is refused
        return "Looking.\n```repl\nprint(len(context))\n```"

    llm_server.script_root(first_iteration)
    await bot.events.command("ask anything?")
    await bot.settle()
    root = slack.message_with("C1", ANSWER_PREFIX)
    [status] = slack.thread_view("C1", root["ts"])
    assert status["text"] == messages.SETUP_PROBLEM and "OPENAI_API_KEY" not in status["seen"]
    assert "Retry" in status["seen"]
    [run] = await bot.store.list_runs()
    assert run.status == "failed" and run.error.startswith("provider: ")
    assert run.error_kind == "operator:provider_auth"
    assert admin_messages.OPERATOR_FIXES["operator:provider_auth"] in caplog.text
    # The iteration that finished before the failure was stored as it finished.
    [iteration] = await bot.store.list_iterations(run.id)
    assert iteration.code == "print(len(context))" and run.iterations == 1


async def test_an_empty_channel_gets_a_message_and_no_model_calls(bot, slack, llm_server):
    await bot.events.command("ask anything?")
    await bot.settle()
    root = slack.message_with("C1", ANSWER_PREFIX)
    assert slack.posts("C1", thread_ts=root["ts"]) == [messages.EMPTY_CHANNEL]
    [run] = await bot.store.list_runs()
    assert run.status == "failed" and run.error == "nothing to read"
    assert llm_server.count("any") == 0


async def test_a_long_answer_is_split_with_the_footer_on_the_last_part(bot, slack, llm_server):
    slack.add_message("C1", "something to read", user="U1")
    llm_server.script_root(
        "```repl\nfinal_answer = ' '.join(f'w{i}' for i in range(5000))\n```\n"
        "FINAL_VAR(final_answer)"
    )
    await bot.events.command("ask anything?")
    await bot.settle()
    root = slack.message_with("C1", ANSWER_PREFIX)
    view = slack.thread_view("C1", root["ts"])
    parts = [m["text"] for m in view[1:]]
    # The status, then continuation parts each under the markdown block's limit.
    assert len(view) == 1 + len(parts) and len(parts) == 3
    for message in view[1:]:
        assert message["blocks"][0]["type"] == "markdown"
        assert len(message["blocks"][0]["text"]) <= 11_000
    words = " ".join(parts).split()
    assert words[:2] == ["w0", "w1"] and "w4999" in words
    assert parts[-1].endswith(" s_") and not any(p.endswith(" s_") for p in parts[:-1])
