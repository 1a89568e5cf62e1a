"""Slack answering 429 on chat.postMessage and conversations.history: runs still finish,
every message is posted once, and the thread reports every stored iteration."""

from __future__ import annotations

import asyncio
from collections import Counter

from tests.faults.checks import check_run_ended_cleanly, map_then_answer


async def test_rate_limited_posts_and_history_reads_are_retried_and_posted_once(
    make_bot, slack, llm_server
):
    bot = await make_bot(rlm_max_runs_per_workspace=3)
    for i in range(4):
        slack.add_message("C1", f"update {i}: all is well", user="U2")
    llm_server.root_responder = map_then_answer
    slack.rate_limit("conversations.history", times=2)  # the first run's first two reads
    slack.rate_limit("chat.postMessage", times=1)  # at least one post, whatever the share draws
    slack.rate_limit_share("chat.postMessage", 0.3)
    slack.rate_limit_share("conversations.history", 0.3)

    await asyncio.gather(*(bot.events.command(f"ask question {n}?") for n in range(3)))
    await bot.settle(60)
    slack.rate_limit_share("chat.postMessage", 0)

    assert slack.throttled["chat.postMessage"] > 0 and slack.throttled["conversations.history"] >= 2
    runs = await bot.store.list_runs()
    assert len(runs) == 3
    for run in runs:
        assert run.status == "finished"
        last = await check_run_ended_cleanly(bot, slack, run)
        assert last.startswith("4 parts read, 0 failed")

    posts = [c for c in slack.calls if c.method == "chat.postMessage"]
    posted = Counter(
        (c.params["channel"], c.params.get("thread_ts"), c.params["text"])
        for c in posts
        if c.status == 200
    )
    assert [key for key, n in posted.items() if n > 1] == []  # nothing posted twice
    refused = {(c.params["channel"], c.params.get("thread_ts"), c.params["text"]) for c in posts
               if c.status == 429}  # fmt: skip
    assert refused and refused <= set(posted)  # and everything refused was posted later
    history = [c for c in slack.calls if c.method == "conversations.history"]
    assert sum(c.status == 429 for c in history) >= 2
    assert sum(c.status == 200 for c in history) == 3  # one read per run, once it got through
