"""App Home and `/rlm history` end to end: today's usage, a user's own recent runs with links,
configuration problems for admins only; a channel's recent runs to the one who asked."""

from __future__ import annotations

from slack_surfaces import home_opened

from bot.slack import messages, surface_messages


def home_text(view: dict) -> str:
    return "\n".join(b["text"]["text"] for b in view["blocks"] if isinstance(b.get("text"), dict))


async def test_app_home_shows_usage_and_the_users_own_runs_with_links(bot, slack, llm_server):
    slack.add_message("C1", "Some history.", user="U2")
    await bot.events.command("ask what happened <!channel>?")
    await bot.events.command("ask what did bob say?", user_id="U2")
    await bot.settle()

    reply = await bot.events.event(home_opened("U1"))
    assert reply.status == 200 and reply.seconds < 1.0
    await bot.settle()
    [view] = slack.home_views["U1"]
    shown = home_text(view)
    assert "*This workspace today* (since 00:00 UTC)" in shown
    assert "2 runs today" in shown
    root = slack.message_with("C1", "*<@U1> asked:*")
    link = f"https://test.slack.com/archives/C1/p{root['ts'].replace('.', '')}"
    assert f"<{link}|what happened &lt;!channel&gt;?>" in shown  # linked, made inert
    assert ":white_check_mark: answered · <#C1>" in shown
    assert "what did bob say" not in shown  # Bob's run is Bob's
    assert surface_messages.HOME_PROBLEMS_TITLE not in shown  # Alice is no admin


async def test_admins_see_configuration_problems_recorded_from_failed_runs(bot, slack, llm_server):
    slack.users["U2"]["is_admin"] = True
    slack.add_message("C1", "Some history.", user="U2")
    llm_server.fail_next(10, 401, kind="root")
    await bot.events.command("ask anything?")
    await bot.settle()
    [problem] = await bot.store.problems_for_workspace("T1")
    assert problem.kind == "provider_auth:openai"
    assert "OPENAI_API_KEY" in problem.fix

    await bot.events.event(home_opened("U2"))
    await bot.events.event(home_opened("U1"))
    await bot.settle()
    admin = home_text(slack.home_views["U2"][0])
    assert surface_messages.HOME_PROBLEMS_TITLE in admin
    assert "The openai provider refused the API key" in admin and "*Fix:*" in admin
    assert "refused the API key" not in home_text(slack.home_views["U1"][0])


async def test_an_admin_with_no_problems_is_told_so(bot, slack):
    slack.users["U1"]["is_owner"] = True
    await bot.events.event(home_opened("U1"))
    await bot.settle()
    shown = home_text(slack.home_views["U1"][0])
    assert surface_messages.HOME_NO_PROBLEMS in shown and surface_messages.HOME_NO_RUNS in shown


async def test_the_messages_tab_publishes_nothing(bot, slack):
    await bot.events.event(home_opened("U1") | {"tab": "messages"})
    await bot.settle()
    assert slack.calls_to("views.publish") == []


async def test_rlm_history_lists_the_channels_runs_to_the_asker_only(bot, slack, llm_server):
    slack.add_channel("C2", "random")
    slack.add_message("C1", "History here.", user="U2")
    slack.add_message("C2", "History there.", user="U2")
    await bot.events.command("ask first question")
    await bot.events.command("ask second question", user_id="U2")
    await bot.events.command("ask elsewhere", channel_id="C2")
    await bot.settle()
    posts_before = len(slack.calls_to("chat.postMessage"))

    reply = await bot.events.command("history", user_id="U2")
    assert reply.status == 200 and reply.seconds < 1.0
    await bot.settle()
    [listing] = slack.ephemerals("U2")
    lines = listing.splitlines()
    assert lines[0] == surface_messages.history_title(2)
    assert "second question" in lines[1] and "<@U2>" in lines[1]  # newest first
    assert "first question" in lines[2] and "<@U1>" in lines[2]
    assert "elsewhere" not in listing
    assert "https://test.slack.com/archives/C1/p" in lines[1]
    assert len(slack.calls_to("chat.postMessage")) == posts_before  # nothing public


async def test_rlm_history_in_a_quiet_channel_says_so(bot, slack):
    await bot.events.command("history")
    await bot.settle()
    assert slack.ephemerals("U1") == [surface_messages.HISTORY_EMPTY]


async def test_rlm_help_lists_every_command(bot, slack):
    reply = await bot.events.command("help")
    for verb in ("ask", "history", "usage", "forget", "config", "help"):
        assert f"`/rlm {verb}" in reply.json()["text"]
    assert reply.json()["text"] == messages.USAGE


async def test_app_home_lists_dm_runs_as_ours_and_history_in_a_channel_does_not(
    bot, slack, llm_server
):
    from slack_surfaces import dm_message

    slack.add_dm("D1", "U1")
    ts = slack.add_message("D1", "count: one two three", user="U1")
    await bot.events.event(dm_message("D1", "count: one two three", ts))
    await bot.settle()
    await bot.events.event(home_opened("U1"))
    await bot.events.command("history")
    await bot.settle()
    shown = home_text(slack.home_views["U1"][0])
    assert f"· {surface_messages.DM_PLACE} ·" in shown and "count: one two three" in shown
    assert slack.ephemerals("U1") == [surface_messages.HISTORY_EMPTY]  # #general's history


async def test_a_missing_slack_scope_met_by_a_run_is_a_problem_for_admins(bot, slack):
    slack.missing_scopes = {"channels:history"}
    await bot.events.command("ask what happened?")
    await bot.settle()
    [problem] = await bot.store.problems_for_workspace("T1")
    assert problem.kind == "slack_scope:channels:history"
    assert "reinstall" in problem.fix
    # The asker is told in one sentence, in the run's status; the fix is for admins only.
    root = slack.message_with("C1", "*<@U1> asked:*")
    [status] = slack.thread_view("C1", root["ts"])
    assert messages.MISSING_SCOPE_FOR_USER in status["seen"]
    assert "channels:history" not in status["seen"]
