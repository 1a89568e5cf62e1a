"""A run's presence against the loopback Slack: one status edited in place (paced and
coalesced), the model's plan per step, a bar for a long map, failures by kind, a ticker for a
silent model, and the answer streamed where Slack can, posted whole where it cannot."""

from __future__ import annotations

import asyncio

from bot_harness import wait_until
from slack_server import BOT_TOKEN

from bot.presence.pacer import ChannelPacer
from bot.presence.run import RunPresence, StreamSupport
from bot.slack import messages
from bot.slack.api import is_slack_host, make_web_client
from rlm import (
    CodeExecuted,
    IterationFinished,
    IterationStarted,
    RootReplied,
    SubcallProgress,
)

THREAD = "1.000001"


def presence_for(slack, *, interval: float = 0.0, streams=None, **kw) -> RunPresence:
    if not slack.channels["C1"]["messages"]:
        slack.add_message("C1", "the question", ts=THREAD)
    return RunPresence(
        client=make_web_client(BOT_TOKEN, slack.api_url),
        pacer=ChannelPacer(0.0),
        edit_pacer=ChannelPacer(interval),
        channel="C1",
        thread_ts=THREAD,
        run_id=7,
        team_id="T1",
        asker="U1",
        edit_interval=interval,
        streams=streams or StreamSupport(),
        **kw,
    )


def finished(iteration: int, reply: str, subcalls: int = 0) -> IterationFinished:
    return IterationFinished(iteration, reply, ("x = 1",), ("",), subcalls, 10, 5, 1.25)


async def settle_edits(presence: RunPresence) -> None:
    """Let the writer make the edit the last events asked for."""
    await wait_until(lambda: not presence._dirty.is_set())
    await asyncio.sleep(0.1)


async def test_events_within_an_interval_become_one_edit_showing_plans_and_the_map_bar(slack):
    presence = presence_for(slack, interval=0.4, tick=0)
    await presence.reading("2 messages, 1 Sep–3 Sep")
    presence.on_event(IterationStarted(1))
    presence.on_event(RootReplied(1, "I will count the lines first.\n```repl\nx\n```"))
    for done in range(1, 313):
        presence.on_event(SubcallProgress(1, done, 500, 0))
    await asyncio.sleep(0.9)
    await presence.close()

    [status] = slack.thread_view("C1", THREAD)
    updates = slack.calls_to("chat.update")
    assert len(slack.posts("C1", thread_ts=THREAD)) == 1  # one status, never a second post
    assert 1 <= len(updates) <= 3  # 312 events, a handful of edits
    assert "*Step 1:* I will count the lines first. — ▓▓▓▓▓▓░░░░ 312/500" in status["seen"]
    assert ":books: Read 2 messages, 1 Sep–3 Sep" in status["seen"]
    assert "Cancel" in status["seen"]


async def test_a_budget_refusal_names_the_budget_rather_than_counting_failures(slack):
    presence = presence_for(slack, tick=0)
    await presence.reading("1 message")
    presence.on_event(IterationStarted(1))
    presence.on_event(SubcallProgress(1, 30, 30, 23, refused=21, refused_by="max_subcalls"))
    presence.on_event(CodeExecuted(1, "x", "", 0.1, error=True))
    await settle_edits(presence)
    await presence.close()
    [status] = slack.thread_view("C1", THREAD)
    assert messages.map_refused(21, "max_subcalls") in status["seen"]
    assert "RLM_" not in status["seen"] and "sub-call" not in status["seen"]
    assert "2 failed" in status["seen"] and "21 failed" not in status["seen"]
    assert messages.code_error() in status["seen"]


async def test_a_silent_model_is_shown_with_a_ticking_wait(slack):
    presence = presence_for(slack, tick=0.1, wait_notice=0.3)
    await presence.reading("1 message")
    presence.on_event(IterationStarted(1))
    await asyncio.sleep(0.8)
    await presence.close()
    [status] = slack.thread_view("C1", THREAD)
    assert ":hourglass: still waiting for the model (" in status["seen"]


async def test_the_end_collapses_the_status_and_posts_the_answer_with_feedback(slack):
    presence = presence_for(slack, tick=0)
    await presence.reading("1 message")
    presence.on_event(finished(1, "Looking.\n```repl\nx = 1\n```"))
    await presence.answered(
        answer="## Result\nIt is **Friday** [m1].",
        footer="_1 iteration · run 7_",
        links={"m1": "https://test.slack.com/archives/C1/p1"},
        summary="done in 1 step",
    )
    status, answer = slack.thread_view("C1", THREAD)
    assert status["seen"] == "done in 1 step\nShow steps"
    assert answer["blocks"][0] == {
        "type": "markdown",
        "text": "## Result\nIt is **Friday** [[m1]](https://test.slack.com/archives/C1/p1).",
    }
    assert answer["text"].startswith("*Result*\nIt is *Friday* <https://test.slack.com/")
    assert ":thumbsup:" in answer["seen"] and answer["text"].endswith("run 7_")
    assert presence.posts == 2


async def test_streaming_is_used_where_slack_has_it_and_learned_absent_once(slack):
    streams = StreamSupport()
    first = presence_for(slack, tick=0, streams=streams)
    await first.reading("1 message")
    await first.answered(answer="Whole.", footer="_run 7_", links={}, summary="done")
    assert streams.available is False
    assert [c.error for c in slack.calls if c.method == "chat.startStream"] == ["unknown_method"]
    assert slack.thread_texts("C1", THREAD)[-1].startswith("Whole.")

    slack.streaming = True
    streams.available = None
    second = presence_for(slack, tick=0, streams=streams)
    await second.reading("1 message")
    await second.answered(answer="A" * 4000, footer="_run 8_", links={}, summary="done")
    assert streams.available is True
    assert len(slack.calls_to("chat.appendStream")) == 2  # 4,000 characters in 1,500 pieces
    streamed = slack.thread_view("C1", THREAD)[-1]
    assert streamed["text"] == "A" * 4000 and "_run 8_" in streamed["seen"]
    assert streamed["blocks"][0]["type"] == "markdown"


async def test_pacer_spaces_turns_per_key():
    pacer = ChannelPacer(0.2)
    loop = asyncio.get_running_loop()
    times = []
    for _ in range(3):
        await pacer.turn("C1")
        times.append(loop.time())
    await pacer.turn("C2")  # another key does not wait
    assert loop.time() - times[-1] < 0.15
    assert times[2] - times[0] >= 0.38


def test_the_token_goes_only_to_slack_or_the_configured_api_origin():
    api = "http://127.0.0.1:8123/api/"
    assert is_slack_host("https://files.slack.com/files-pri/T1-F1/a.txt", api)
    assert is_slack_host("http://127.0.0.1:8123/files-pri/F1/a.txt", api)
    assert not is_slack_host("http://files.slack.com/a.txt", api)  # not over HTTPS
    assert not is_slack_host("https://files.slack.com.evil.example/a.txt", api)
    assert not is_slack_host("https://evilslack.com/a.txt", api)
    assert not is_slack_host("http://127.0.0.1:9999/files-pri/F1/a.txt", api)  # other port
