"""Slack's Agent messaging experience (`agent_view`) end to end, beside the assistant pane
(tests/test_bot_pane.py): the Messages tab's suggested prompts, the channel in view from
`app_context_changed`, questions answered in the DM thread with the status line as progress;
and the early signs: a mention's 👀 before anything is read, status lines sent only when they
change, `loading_messages`, pane answers that say what they read."""

from __future__ import annotations

import itertools
import time

from bot_harness import mention
from slack_sdk.web.async_client import AsyncWebClient
from slack_server import BOT_TOKEN, BOT_USER
from slack_surfaces import app_context_changed, dm_message, home_opened

from bot.listeners.agent import channel_in_view
from bot.presence.pacer import ChannelPacer
from bot.presence.pane import STATUS_REFRESH, PanePresence
from bot.presence.run import StreamSupport
from bot.slack import surface_messages


def sub_prompts(llm_server) -> str:
    return "\n".join(r.prompt for r in llm_server.requests if r.kind == "sub")


def statuses_in(slack, channel: str, thread_ts: str) -> list[str]:
    return [s for c, t, s in slack.pane_statuses if (c, t) == (channel, thread_ts)]


async def ask_in_dm(bot, slack, question: str, *, thread_ts: str | None = None) -> str:
    extra = {"thread_ts": thread_ts} if thread_ts else {}
    ts = slack.add_message("D1", question, user="U1", **extra)
    await bot.events.event(dm_message("D1", question, ts, **extra))
    await bot.settle()
    return ts


async def test_the_messages_tab_gets_suggested_prompts_without_a_thread(bot, slack):
    slack.agent_view = True
    slack.add_dm("D1", "U1")
    reply = await bot.events.event(home_opened("U1", channel="D1", tab="messages"))
    assert reply.status == 200 and reply.seconds < 1.0
    await bot.settle()
    [prompts] = slack.suggested_prompts  # a thread_ts would have been dropped silently
    assert prompts["channel"] == "D1" and prompts["thread_ts"] is None
    assert [p["title"] for p in prompts["prompts"]] == [t for t, _ in surface_messages.PANE_PROMPTS]
    assert slack.posts() == [] and slack.calls_to("views.publish") == []


async def test_a_question_on_agent_view_is_about_the_channel_in_view(bot, slack, llm_server):
    slack.agent_view = True
    slack.add_dm("D1", "U1")
    slack.add_message("C1", "The launch moved to Friday.", user="U2")
    llm_server.sub_responder = lambda prompt: "Friday."
    await bot.events.event(app_context_changed("U1", channel="D1", viewing="C1"))
    await bot.settle()

    question_ts = await ask_in_dm(bot, slack, "When is the launch?")

    assert "The launch moved to Friday." in sub_prompts(llm_server)
    [answer] = slack.posts("D1", thread_ts=question_ts)  # the answer only: progress is status
    assert answer.startswith("Friday.")
    assert ":books: Read 1 message" in answer  # what was read, now the status line is gone
    assert slack.posts("C1") == []
    statuses = statuses_in(slack, "D1", question_ts)
    assert statuses[0] == surface_messages.PANE_STATUS_THINKING and statuses[-1] == ""
    [(_, _, loading)] = slack.loading_messages  # rotated under the first status only
    assert loading == list(surface_messages.PANE_LOADING_MESSAGES)
    assert slack.pane_titles == [("D1", question_ts, "When is the launch?")]
    [run] = await bot.store.list_runs()
    assert (run.trigger, run.thread_ts, run.status) == ("assistant", question_ts, "finished")
    assert [c.params["channel"] for c in slack.calls_to("conversations.members")] == ["C1"]

    # A reply in that conversation's thread still reads the channel in view.
    llm_server.requests.clear()
    await ask_in_dm(bot, slack, "Who moved it?", thread_ts=question_ts)
    assert "The launch moved to Friday." in sub_prompts(llm_server)
    assert len(slack.posts("D1", thread_ts=question_ts)) == 2


async def test_agent_view_keeps_the_panes_checks(bot, slack, llm_server):
    slack.agent_view = True
    slack.add_dm("D1", "U1")
    slack.add_message("C1", "Members-only plans.", user="U2")
    slack.set_members("C1", ["U2", BOT_USER])
    await bot.events.event(app_context_changed("U1", channel="D1", viewing="C1"))
    await bot.settle()
    ts = await ask_in_dm(bot, slack, "Summarize this channel")
    assert slack.posts("D1", thread_ts=ts) == [surface_messages.PANE_NOT_A_MEMBER]
    assert [c.method for c in slack.reads_of("C1")] == ["conversations.members"]
    assert llm_server.count("any") == 0


async def test_with_nothing_in_view_the_conversation_answers_over_itself(bot, slack, llm_server):
    slack.agent_view = True
    slack.add_dm("D1", "U1")
    slack.add_message("C1", "Channel chatter.", user="U2")
    await bot.events.event(app_context_changed("U1", channel="D1", viewing="C1"))
    await bot.events.event(app_context_changed("U1", channel="D1"))  # moved away: {}
    await bot.settle()
    ts = await ask_in_dm(bot, slack, "Count the words: alpha beta gamma")
    context = sub_prompts(llm_server)
    assert "alpha beta gamma" in context and "Channel chatter." not in context
    assert slack.reads_of("C1") == []
    assert len(slack.posts("D1", thread_ts=ts)) == 1  # status line, then the answer alone
    assert statuses_in(slack, "D1", ts)[-1] == ""


def test_the_channel_in_view_is_the_first_channel_an_entity_names():
    canvas = {"type": "slack#/types/canvas_id", "value": "F1"}
    message = {"type": "slack#/types/message_context", "team_id": "T1",
               "value": {"channel_id": "C9", "message_ts": "1.0"}}  # fmt: skip
    channel = {"type": "slack#/types/channel_id", "value": "C2", "team_id": "T2"}
    assert channel_in_view({"entities": [canvas, channel, message]}) == ("C2", "T2")
    assert channel_in_view({"entities": [canvas, message]}) == ("C9", "T1")
    assert channel_in_view({"entities": [canvas]}) == (None, None)
    assert channel_in_view({}) == (None, None) and channel_in_view(None) == (None, None)


async def test_a_mention_is_marked_seen_before_anything_is_read(bot, slack, llm_server):
    slack.add_message("C1", "Standup moved to 10:00.", user="U2")
    text = f"<@{BOT_USER}> when is standup?"
    ts = slack.add_message("C1", text, user="U1")
    await bot.events.event(mention("C1", text, ts))
    await bot.settle()
    assert ("C1", ts, "eyes") in slack.reactions  # left in place with the answer
    methods = [c.method for c in slack.calls]
    assert methods.index("reactions.add") < methods.index("conversations.history")
    [run] = await bot.store.list_runs()
    assert run.status == "finished" and len(slack.posts("C1", thread_ts=ts)) == 2


async def test_a_mention_without_reactions_write_is_still_answered(bot, slack, llm_server):
    slack.missing_scopes = {"reactions:write"}
    text = f"<@{BOT_USER}> hello?"
    ts = slack.add_message("C1", text, user="U1")
    slack.add_message("C1", "Some history.", user="U2")
    await bot.events.event(mention("C1", text, ts))
    await bot.settle()
    assert slack.reactions == []
    [run] = await bot.store.list_runs()
    assert run.status == "finished"


async def test_a_status_that_does_not_change_is_not_sent_again(make_bot, slack, llm_server):
    # Ticks every 0.1 s while the run takes over a second: each tick used to resend the line.
    bot = await make_bot(rlm_status_wait_notice=0.2)
    llm_server.root_latency = llm_server.sub_latency = 0.6
    slack.agent_view = True
    slack.add_dm("D1", "U1")
    await bot.events.event(app_context_changed("U1", channel="D1"))
    await bot.settle()
    started = time.monotonic()
    ts = await ask_in_dm(bot, slack, "Count the words: alpha beta gamma")
    assert time.monotonic() - started > 1.2  # a dozen ticks, at least
    statuses = statuses_in(slack, "D1", ts)
    assert all(a != b for a, b in itertools.pairwise(statuses)), statuses
    assert len(slack.calls_to("assistant.threads.setStatus")) == len(statuses)
    # Reading, thinking, step 1, cleared: one call each.
    assert statuses == [
        surface_messages.PANE_STATUS_THINKING,
        surface_messages.PANE_STATUS_STARTED,
        surface_messages.pane_step(1),
        "",
    ]


async def test_an_unchanged_status_is_refreshed_before_slack_drops_it(slack):
    slack.add_dm("D1", "U1")
    now = [0.0]
    client = AsyncWebClient(token=BOT_TOKEN, base_url=slack.api_url)
    presence = PanePresence(
        client=client, pacer=ChannelPacer(0.0), edit_pacer=ChannelPacer(0.0), channel="D1",
        thread_ts="1.0", run_id=1, team_id="T1", asker="U1", edit_interval=0.0,
        streams=StreamSupport(), tick=0.0, clock=lambda: now[0],
    )  # fmt: skip
    for _ in range(5):
        await presence.set_status("is thinking (step 1)…")
    assert presence.status_calls == 1
    now[0] = STATUS_REFRESH + 1  # Slack clears a status after two minutes
    await presence.set_status("is thinking (step 1)…")
    await presence.set_status("")
    await presence.set_status("")
    assert presence.status_calls == 4  # refreshed once; clearing is always said
    assert statuses_in(slack, "D1", "1.0") == ["is thinking (step 1)…"] * 2 + [""] * 2
