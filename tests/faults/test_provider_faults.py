"""Providers that fail a third of the time (429 with Retry-After, 500s, requests held past the
client's timeout, malformed bodies) under several runs at once: every run finishes or fails
with a message in its thread, and no iteration it reported is lost."""

from __future__ import annotations

import asyncio

from fake_llm import HANG, MALFORMED

from bot.slack import messages
from tests.faults.checks import check_run_ended_cleanly, map_then_answer

FAULTS = [429, 500, HANG, MALFORMED]
CHANNELS = [("T1", "C1"), ("T2", "C2")]
RUNS_PER_CHANNEL = 3
LINES = 10


async def test_runs_under_a_thirty_percent_fault_rate_end_cleanly(make_bot, slack, llm_server):
    bot = await make_bot(
        rlm_max_run_seconds=8,
        rlm_provider_timeout=1.0,
        rlm_provider_retries=6,
        rlm_max_runs_per_workspace=RUNS_PER_CHANNEL,
        rlm_max_parallel_calls=4,
    )
    slack.add_channel("C2", "random")
    for _, channel in CHANNELS:
        for i in range(LINES):
            slack.add_message(channel, f"{channel} update {i}: all is well", user="U1")
    llm_server.root_responder = map_then_answer
    llm_server.failure_rate = 0.3
    llm_server.failure_kind = "any"  # root calls fail too
    llm_server.failure_statuses = FAULTS
    llm_server.failure_retry_after = 0.1
    llm_server.hang_seconds = 20.0
    for fault in FAULTS:  # at least one of each, whatever the draw
        llm_server.fail_next(1, fault, retry_after=0.1 if fault == 429 else None)

    replies = await asyncio.gather(
        *(
            bot.events.command(f"ask question {n}?", team_id=team, channel_id=channel)
            for team, channel in CHANNELS
            for n in range(RUNS_PER_CHANNEL)
        )
    )
    assert all(r.status == 200 for r in replies)
    await bot.settle(60)

    assert set(llm_server.injected) >= {"429", "500", HANG, MALFORMED}
    runs = await bot.store.list_runs()
    assert len(runs) == len(CHANNELS) * RUNS_PER_CHANNEL  # none lost before it started
    for run in runs:
        last = await check_run_ended_cleanly(bot, slack, run)
        if run.status == "finished" and run.stopped_by is None:
            assert last.startswith(f"{LINES} parts read, ")
            assert run.iterations == 2 and run.subcalls == LINES
        elif run.status == "finished":  # the time budget cut it short: its best, and why
            assert run.stopped_by == "max_seconds"
            assert messages.stopped_by("max_seconds", 8) in last
        elif run.stopped_by is None:  # a fault no retry mends within the run's retries
            assert last == messages.PROVIDER_DOWN
        else:
            assert last == messages.OUT_OF_TIME
    assert any(run.status == "finished" for run in runs)
