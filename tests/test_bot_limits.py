"""Per-workspace limits and pacing: sub-calls in flight, runs at once, posts per second."""

from __future__ import annotations

import asyncio
import itertools

from bot_harness import MAP_EVERY_LINE, wait_until
from slack_runs import ANSWER_FOOTER

from bot.slack import messages


async def test_two_workspaces_at_once_each_stay_within_their_own_limit(make_bot, slack, llm_server):
    bot = await make_bot(rlm_max_parallel_calls=2, rlm_max_runs_per_workspace=2)
    for channel in ("CA", "CB"):
        slack.add_channel(channel, channel.lower())
        for i in range(12):
            slack.add_message(channel, f"{channel} note {i}", user="U1")
    llm_server.root_responder = lambda conversation: MAP_EVERY_LINE
    llm_server.sub_latency = 0.05

    replies = await asyncio.gather(
        *(
            bot.events.command(f"ask question {n}", team_id=f"T{c[-1]}", channel_id=c)
            for c in ("CA", "CB")
            for n in range(2)
        )
    )
    assert all(r.status == 200 and r.seconds < 1.0 for r in replies)
    await bot.settle(60)

    runs = await bot.store.list_runs()
    assert sorted(r.team_id for r in runs) == ["TA", "TA", "TB", "TB"]
    assert all(r.status == "finished" and r.subcalls == 13 for r in runs)
    for team in ("TA", "TB"):
        limiter = bot.services.limiters.get(team)
        assert limiter.max_in_flight == 2
        assert limiter.peak == 2  # reached, never passed
    # Both workspaces mapped at the same time: more in flight than one workspace's cap.
    assert 2 < llm_server.max_in_flight <= 4


async def test_runs_beyond_the_workspace_cap_wait_their_turn_and_say_so(
    make_bot, slack, llm_server
):
    bot = await make_bot(rlm_max_runs_per_workspace=1)
    slack.add_message("C1", "something to read", user="U2")
    llm_server.root_latency = 1.0

    await bot.events.command("ask first?")
    await wait_until(lambda: llm_server.count("root") == 1)
    await bot.events.command("ask second?", user_id="U2")
    second = await _root_of(slack, "*<@U2> asked:*")
    await wait_until(lambda: len(slack.posts("C1", thread_ts=second)) == 1)
    assert slack.posts("C1", thread_ts=second) == [messages.queued(1, 1)]
    assert sorted(r.status for r in await bot.store.list_runs()) == ["queued", "running"]

    llm_server.root_latency = 0.0
    await bot.settle()
    runs = await bot.store.list_runs()
    assert [r.status for r in runs] == ["finished", "finished"]
    assert runs[1].created_at < runs[0].finished_at  # it was waiting while the first ran
    assert ANSWER_FOOTER.search(slack.posts("C1", thread_ts=second)[-1])


async def test_status_edits_are_paced_and_coalesced_and_the_run_posts_twice(
    make_bot, slack, llm_server
):
    bot = await make_bot(rlm_status_edit_interval=1.0)
    slack.add_message("C1", "something to read", user="U2")
    llm_server.root_latency = 1.2  # each step outlasts an edit interval
    llm_server.script_root(
        "Printing one.\n```repl\nx = 1\nprint(x)\n```",
        "Asking once.\n```repl\ny = llm_query('hello')\n```",
        "FINAL(done)",
    )
    await bot.events.command("ask paced?")
    await bot.settle()
    root = slack.message_with("C1", "*<@U1> asked:*")
    thread_posts = [
        c for c in slack.calls_to("chat.postMessage") if c.params.get("thread_ts") == root["ts"]
    ]
    assert len(thread_posts) == 2  # the status and the answer
    status_ts = slack.thread_view("C1", root["ts"])[0]["ts"]
    edits = [c for c in slack.calls_to("chat.update") if c.params.get("ts") == status_ts]
    live = edits[:-1]  # the last edit collapses the status when the run ends
    gaps = [b.at - a.at for a, b in itertools.pairwise(live)]
    assert all(gap >= 0.95 for gap in gaps)
    shown = "\n".join(str(c.params["blocks"]) for c in edits)
    for line in ("Read 1 message", "*Step 1:* Printing one.", "*Step 2:* Asking once."):
        assert line in shown
    # Events that arrived within the second were coalesced into one edit.
    assert len(live) < 6


async def _root_of(slack, prefix: str) -> str:
    found: list[str] = []

    def posted() -> bool:
        try:
            found.append(slack.message_with("C1", prefix)["ts"])
        except LookupError:
            return False
        return True

    await wait_until(posted)
    return found[0]
