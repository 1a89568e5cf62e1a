"""PostgreSQL dropping every connection in the middle of a run, as a server restart does: the
app's next writes reconnect (pooled connections are checked before use) and the run ends
with everything it reported stored."""

from __future__ import annotations

from bot_harness import wait_until
from databases import POSTGRES_ONLY, run_in_thread, terminate_connections

from tests.faults.checks import check_run_ended_cleanly


@POSTGRES_ONLY
async def test_connections_cut_mid_run_the_run_still_ends_with_all_it_reported(
    make_bot, slack, llm_server, database_url
):
    bot = await make_bot()
    slack.add_message("C1", "something to read", user="U2")
    cut: list[int] = []

    def first_step(conversation):
        # The run has stored its start by now; its pool holds open connections.
        cut.append(run_in_thread(lambda: terminate_connections(database_url)))
        return "Looking.\n```repl\nprint(len(context))\n```"

    def second_step(conversation):
        cut.append(run_in_thread(lambda: terminate_connections(database_url)))
        return "FINAL(read it all)"

    llm_server.script_root(first_step, second_step)
    await bot.events.command("ask anything?")
    await bot.settle(60)
    await wait_until(lambda: len(cut) == 2)
    assert cut[0] >= 1  # connections were there to cut
    [run] = await bot.store.list_runs()
    assert run.status == "finished", (run.status, run.error)
    await check_run_ended_cleanly(bot, slack, run)
    assert [i.iteration for i in await bot.store.list_iterations(run.id)] == [1, 2]
    assert run.iterations == 2
