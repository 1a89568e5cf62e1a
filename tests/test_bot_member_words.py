"""What members see, over the real app and the loopback Slack: no environment variable
names, no "tokens / sub-calls / iterations / run N"; an admin alone is told the setting."""

from __future__ import annotations

import json
import re

from bot_harness import mention

from bot.slack import messages

ENGINEERING = re.compile(
    r"(?-i:\bRLM_[A-Z_]+|\bSLACK_[A-Z_]+)|\btokens\b|sub-calls?|subcalls|iterations?\b|\brun \d+",
    re.IGNORECASE,
)
SHOWING = ("chat.postMessage", "chat.update", "chat.postEphemeral", "chat.startStream",
           "chat.appendStream", "chat.stopStream", "views.open")  # fmt: skip


def member_visible(slack, admins: set[str]) -> list[str]:
    """The text and blocks of every call that shows something, but admins' own ephemerals."""
    shown = []
    for method in SHOWING:
        for call in slack.calls_to(method):
            if method == "chat.postEphemeral" and call.params.get("user") in admins:
                continue
            shown.append(json.dumps({k: call.params.get(k) for k in ("text", "blocks", "view",
                                     "markdown_text")}, ensure_ascii=False))  # fmt: skip
    return shown


async def test_members_see_no_engineering_words_and_admins_get_the_setting(
    make_bot, slack, llm_server
):
    slack.add_user("U3", "Ada Admin")
    slack.admins.add("U3")
    bot = await make_bot(rlm_daily_tokens=200)
    slack.add_message("C1", "Standup moved to 10:00.", user="U2")
    llm_server.script_root("Look first.\n```repl\nprint(len(context))\n```", "FINAL(ok [m1])")
    await bot.events.command("ask when is standup?")  # answered, then stopped by the day
    await bot.settle()
    await bot.events.command("ask again?", user_id="U2")  # refused: the day is used up
    thread = slack.add_message("C1", "a thread", user="U3")
    await bot.events.event(
        mention("C1", "<@UBOT> and now?", slack.next_ts(), thread_ts=thread, user="U3")
    )
    await bot.settle()

    shown = member_visible(slack, admins={"U3"})
    assert shown and not [s for s in shown if ENGINEERING.search(s)], [
        ENGINEERING.search(s).group(0) for s in shown if ENGINEERING.search(s)
    ]
    assert messages.DAILY_LIMIT_REACHED in slack.ephemerals("U2")
    admin_notes = [t for t in slack.ephemerals("U3") if "/rlm config daily_tokens" in t]
    assert admin_notes, slack.ephemerals("U3")
    assert not any("/rlm config" in t for t in slack.ephemerals("U2"))


async def test_an_empty_thread_notice_carries_no_run_buttons(bot, slack, llm_server):
    await bot.events.command("ask what is new?")  # an empty channel: a notice, not a run
    await bot.settle()
    [status] = [
        c
        for c in slack.calls_to("chat.update") + slack.calls_to("chat.postMessage")
        if messages.EMPTY_CHANNEL in str(c.params.get("blocks"))
    ][-1:]
    assert "rlm_retry" not in str(status.params["blocks"])
    assert "rlm_show_steps" not in str(status.params["blocks"])
