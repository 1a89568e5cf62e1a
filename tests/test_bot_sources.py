"""Sources and scope end to end: references the model can cite become permalinks, the status
says what was read and what limits left out, and a follow-up keeps the first run's scope."""

from __future__ import annotations

import time

from bot_harness import file_shared, mention
from slack_server import BOT_USER

ASKED = "*<@U1> asked:*"


def prompts_since(llm_server, start: int, kind: str = "sub") -> str:
    return "\n".join(r.prompt for r in llm_server.requests[start:] if r.kind == kind)


def permalink(channel: str, ts: str) -> str:
    return f"https://test.slack.com/archives/{channel}/p{ts.replace('.', '')}"


async def test_cited_references_become_permalinks_and_the_status_says_what_was_read(
    bot, slack, llm_server
):
    first = slack.add_message("C1", "Standup is at 9:00.", user="U1")
    second = slack.add_message("C1", "Standup moved to 10:00.", user="U2")
    slack.add_file("F1", "notes.txt", b"standup notes", channel_id="C1", user="U2")
    await bot.events.event(file_shared("C1", "F1", user="U2"))
    await bot.settle()
    slack.add_message("C1", "no thread here", user="U2")
    llm_server.script_root(
        "Reading the lines.\n```repl\nfor doc in context:\n    print(doc[:2000])\n```",
        "FINAL(It is at 10:00 [m2], no longer 9:00 [m1]; see [m99] and [f1].)",
    )
    await bot.events.command("ask when is standup?")
    await bot.settle()

    root = slack.message_with("C1", ASKED)
    status, answer = slack.thread_view("C1", root["ts"])
    markdown = answer["blocks"][0]["text"]
    assert f"[[m2]]({permalink('C1', second)})" in markdown
    assert f"[[m1]]({permalink('C1', first)})" in markdown
    assert "[m99]" in markdown  # a reference the context never had stays as written
    assert "[[f1]](https://test.slack.com/files/U2/F1)" in markdown
    assert f"<{permalink('C1', second)}|[m2]>" in answer["text"]
    day = time.strftime("%-d %b", time.gmtime())
    # The file's share message counts among the messages, and the file itself as a file.
    assert f"read 4 messages, {day}, 1 file" in status["seen"]

    root_prompt = prompts_since(llm_server, 0, "root")
    assert "[m12] or [f2]" in root_prompt  # the model is told to cite
    printed = "\n".join(
        m["content"] for r in llm_server.requests if r.kind == "root" for m in r.messages
    )
    assert "[m1] [" in printed and "Alice: Standup is at 9:00." in printed
    assert "[m2] [" in printed and "bob: Standup moved to 10:00." in printed
    assert "# File: notes.txt (shared by bob on " in printed and ") [f1]" in printed


async def test_the_limits_that_left_history_out_are_said(make_bot, slack, llm_server):
    bot = await make_bot(rlm_history_messages=2)
    for i in range(3):
        slack.add_message("C1", f"message {i}", user="U2")
    await bot.events.command("ask anything?")
    await bot.settle()
    root = slack.message_with("C1", ASKED)
    status = slack.thread_view("C1", root["ts"])[0]["seen"]
    assert "read 2 messages" in status
    assert "only the newest 2 messages read" in status and "RLM_" not in status


async def test_history_older_than_the_age_limit_is_said_to_be_left_out(make_bot, slack, llm_server):
    bot = await make_bot(rlm_history_days=30)
    slack.add_message("C1", "ancient", user="U2", ts=f"{time.time() - 40 * 86400:.6f}")
    slack.add_message("C1", "recent", user="U2")
    await bot.events.command("ask anything?")
    await bot.settle()
    root = slack.message_with("C1", ASKED)
    status = slack.thread_view("C1", root["ts"])[0]["seen"]
    assert "read 1 message" in status
    assert "history older than 30 days not read" in status and "RLM_" not in status
    assert "ancient" not in prompts_since(llm_server, 0)


async def test_a_follow_up_in_a_channel_runs_thread_reads_the_channel_and_earlier_answers(
    bot, slack, llm_server
):
    slack.add_message("C1", "The budget is 40k.", user="U2")
    await bot.events.command("ask what is the budget?")
    await bot.settle()
    root = slack.message_with("C1", ASKED)
    slack.add_message("C1", "Signed off by Dana on Monday.", user="U2")  # after the first run
    text = f"<@{BOT_USER}> who signed it off?"
    ts = slack.add_message("C1", text, user="U1", thread_ts=root["ts"])
    start = len(llm_server.requests)

    await bot.events.event(mention("C1", text, ts, thread_ts=root["ts"]))
    await bot.settle()

    first, second = await bot.store.list_runs()
    assert (second.scope, second.thread_ts, second.status) == ("channel", root["ts"], "finished")
    context = prompts_since(llm_server, start)
    assert "The budget is 40k." in context and "Signed off by Dana" in context
    assert "# Earlier questions and answers in this thread: 1" in context
    assert "what is the budget?" in context and (first.answer or "")[:40] in context
    assert "Answered in" not in context and "who signed it off" not in context
    assert len(slack.thread_view("C1", root["ts"])) == 4  # two runs, two messages each


async def test_a_follow_up_in_a_thread_runs_thread_keeps_to_that_thread(bot, slack, llm_server):
    slack.add_message("C1", "Unrelated chatter elsewhere.", user="U2")
    parent = slack.add_message("C1", "Draft budget: marketing 40%.", user="U2")
    slack.add_message("C1", "Sales gets 60%.", user="U1", thread_ts=parent)
    first_text = f"<@{BOT_USER}> what does sales get?"
    first_ts = slack.add_message("C1", first_text, user="U1", thread_ts=parent)
    await bot.events.event(mention("C1", first_text, first_ts, thread_ts=parent))
    await bot.settle()
    text = f"<@{BOT_USER}> and marketing?"
    ts = slack.add_message("C1", text, user="U1", thread_ts=parent)
    start = len(llm_server.requests)

    await bot.events.event(mention("C1", text, ts, thread_ts=parent))
    await bot.settle()

    _, second = await bot.store.list_runs()
    assert (second.scope, second.scope_ts) == ("thread", parent)
    context = prompts_since(llm_server, start)
    assert "Draft budget: marketing 40%." in context and "Sales gets 60%." in context
    assert "# Earlier questions and answers in this thread: 1" in context
    assert "Unrelated chatter" not in context
    assert "Answered in" not in context and ":white_check_mark:" not in context


def test_permalinks_are_built_as_slack_builds_them():
    from datetime import UTC, datetime

    from bot.gather.context import file_link, message_link
    from bot.storage import FileRecord

    base = "https://acme.slack.com/"
    assert message_link(base, "C1", "1700000000.123456", None) == (
        "https://acme.slack.com/archives/C1/p1700000000123456"
    )
    assert message_link(base, "C1", "1700000001.000001", "1700000000.123456") == (
        "https://acme.slack.com/archives/C1/p1700000001000001?thread_ts=1700000000.123456&cid=C1"
    )
    assert message_link(None, "C1", "1.000002", "1.000002").startswith("https://slack.com/")
    record = FileRecord("F1", "C1", None, "a.txt", None, 1, "a", "U2", datetime.now(UTC))
    assert file_link(base, record) == "https://acme.slack.com/files/U2/F1"
