"""Channel isolation with planted content: a question never reads another channel's messages
or files, and its answer goes only to the thread or pane it was asked in.

The loopback Slack server records every call, so the tests assert on what the app asked for
(no conversations.history/replies/members and no files.info or download for the other
channel) and where it posted, besides what reached the model.
"""

from __future__ import annotations

import json

from bot_harness import file_shared, mention
from slack_server import BOT_ID, BOT_USER
from slack_surfaces import dm_message, thread_started

PLANTED = "PLANTED-7731"


def plant(slack) -> None:
    """#finance, which the app is in, full of things no question elsewhere may read."""
    slack.add_channel("C2", "finance", private=True)
    root = slack.add_message("C2", f"{PLANTED} budget is secret", user="U2")
    slack.add_message("C2", f"{PLANTED} reply in a thread", user="U2", thread_ts=root)
    slack.add_file("F2", "payroll.txt", f"{PLANTED} payroll".encode(), channel_id="C2", user="U2")
    slack.add_file("F3", "unseen.txt", f"{PLANTED} unseen".encode(), channel_id="C2", user="U2")


def everything_the_model_saw(llm_server) -> str:
    return "\n".join(json.dumps(r.messages) for r in llm_server.requests)


async def test_no_question_reads_or_answers_outside_its_channel(bot, slack, llm_server):
    plant(slack)
    await bot.events.event(file_shared("C2", "F2", user="U2"))  # kept for #finance
    await bot.settle()
    assert [f.file_id for f in await bot.store.channel_files("T1", "C2")] == ["F2"]
    start = len(slack.calls)

    slack.add_message("C1", "General chatter about lunch.", user="U1")
    slack.add_file("F1", "menu.txt", b"Soup on Monday.", channel_id="C1", user="U1")
    # /rlm ask in #general.
    await bot.events.command("ask what is for lunch?")
    # A mention at the top level, and one in a thread, of #general.
    top = slack.add_message("C1", f"<@{BOT_USER}> lunch?", user="U1")
    await bot.events.event(mention("C1", f"<@{BOT_USER}> lunch?", top))
    parent = slack.add_message("C1", "Thread about soup.", user="U2")
    in_thread = slack.add_message("C1", f"<@{BOT_USER}> soup?", user="U1", thread_ts=parent)
    await bot.events.event(mention("C1", f"<@{BOT_USER}> soup?", in_thread, thread_ts=parent))
    # The assistant pane, viewing #general; and a DM.
    slack.add_dm("D1", "U1")
    pane = slack.add_message("D1", "", user=BOT_USER, bot_id=BOT_ID, subtype="assistant_app_thread")
    await bot.events.event(thread_started("D1", pane, viewing="C1"))
    await bot.settle()
    asked = slack.add_message("D1", "summarize", user="U1", thread_ts=pane)
    await bot.events.event(dm_message("D1", "summarize", asked, thread_ts=pane))
    dm = slack.add_message("D1", "what is 2+2?", user="U1")
    await bot.events.event(dm_message("D1", "what is 2+2?", dm))
    await bot.settle()

    runs = await bot.store.list_runs()
    assert [r.status for r in runs] == ["finished"] * 5
    assert "Soup on Monday." in everything_the_model_saw(llm_server)
    assert PLANTED not in everything_the_model_saw(llm_server)
    later = slack.calls[start:]
    assert [c for c in later if c.params.get("channel") == "C2"] == []
    assert [c for c in later if c.params.get("file") in ("F2", "F3")] == []
    assert [c for c in later if c.method == "files.download" and "/F1/" not in c.path] == []

    # Every post went to the thread of the run that made it (or is the /rlm ask question).
    threads = {(r.channel_id, r.thread_ts) for r in runs}
    question_root = slack.message_with("C1", "*<@U1> asked:*")["ts"]
    for call in later:
        if call.method == "chat.postMessage":
            place = (call.params["channel"], call.params.get("thread_ts"))
            assert place in threads or place == ("C1", None), place
    assert ("C1", question_root) in threads


async def test_a_file_kept_for_one_channel_is_not_read_in_another(bot, slack, llm_server):
    plant(slack)
    await bot.events.event(file_shared("C2", "F2", user="U2"))
    await bot.settle()
    slack.add_message("C1", "Nothing secret here.", user="U1")
    await bot.events.command("ask what is the payroll?")
    await bot.settle()
    assert PLANTED not in everything_the_model_saw(llm_server)
    assert "# File:" not in everything_the_model_saw(llm_server)  # #general has no files
    [run] = await bot.store.list_runs()
    assert run.status == "finished"
