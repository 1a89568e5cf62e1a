"""The database refusing every connection for seconds in the middle of a run (PostgreSQL
behind a loopback proxy the test controls: open connections cut, new ones refused): the
run's writes wait it out, and every question ends with exactly one visible outcome, the one
its stored status says. With a retry budget shorter than the outage, the run's end is kept
in memory and written once the database answers again."""

from __future__ import annotations

import asyncio
import logging

import pytest
from bot_harness import BotHarness, harness_settings, wait_until
from databases import POSTGRES_ONLY
from slack_runs import ANSWER_FOOTER
from sqlalchemy.engine import make_url

from bot.slack import messages
from tests.faults.checks import check_run_ended_cleanly
from tests.faults.servers import Proxy

OUTAGE_SECONDS = 8.0


@pytest.fixture
async def proxied(database_url):
    url = make_url(database_url)
    proxy = Proxy(url.port or 5432)
    await proxy.accept()
    try:
        yield proxy, url.set(port=proxy.port).render_as_string(hide_password=False)
    finally:
        await proxy.close()


async def outage_at_root_call(slack, llm_server, proxied, *, call: int, **overrides):
    proxy, url = proxied
    bot = await BotHarness(
        harness_settings(
            slack_api_url=slack.api_url,
            openai_base_url=llm_server.openai_base_url,
            database_url=url,
            **overrides,
        ),
        response_base=slack.url,
    ).start()
    try:
        slack.add_message("C1", "something to read", user="U2")
        llm_server.root_latency = 1.0  # the outage starts while the model thinks
        llm_server.script_root("Looking.\n```repl\nprint(len(context))\n```", "FINAL(read it all)")
        reply = await bot.events.command("ask anything?")
        assert reply.status == 200
        await wait_until(lambda: llm_server.count("root") >= call, seconds=20)
        await proxy.refuse()
        await asyncio.sleep(OUTAGE_SECONDS)
        await proxy.accept()
        await bot.settle(40)
        await wait_until(lambda: bot.services.runner.keeper.waiting == 0, seconds=10)
        [run] = await bot.store.list_runs()
        view = slack.thread_view(run.channel_id, run.thread_ts)
        texts = [m["text"] for m in view]
        return bot, run, texts
    except BaseException:
        await bot.close()
        raise


@POSTGRES_ONLY
@pytest.mark.parametrize("call", [1, 2], ids=["mid-run", "at-the-answer"])
async def test_a_database_outage_mid_run_is_waited_out_and_the_run_answers_once(
    slack, llm_server, proxied, call
):
    bot, run, texts = await outage_at_root_call(slack, llm_server, proxied, call=call)
    try:
        assert run.status == "finished", (run.status, run.error)
        await check_run_ended_cleanly(bot, slack, run)
        assert [i.iteration for i in await bot.store.list_iterations(run.id)] == [1, 2]
        answers = [t for t in texts if ANSWER_FOOTER.search(t)]
        assert len(answers) == 1, texts
        assert not [t for t in texts if ":warning:" in t], texts
    finally:
        await bot.close()


@POSTGRES_ONLY
async def test_an_outage_longer_than_the_retry_budget_ends_as_the_thread_says(
    slack, llm_server, proxied, caplog
):
    caplog.set_level(logging.INFO, logger="bot.runs")
    bot, run, texts = await outage_at_root_call(
        slack, llm_server, proxied, call=2, rlm_db_retry_seconds=1.0
    )
    try:
        # The run's end could not be stored in time: it waited in memory, was shown, and
        # the database, once back, says what the thread says.
        assert "its end waits to be stored until the database answers" in caplog.text
        assert "its end, kept meanwhile, is stored" in caplog.text
        shown = "\n".join(texts)
        answers = [t for t in texts if ANSWER_FOOTER.search(t)]
        if run.status == "finished":
            assert len(answers) == 1 and ":warning:" not in shown, texts
        else:
            assert run.status == "failed", (run.status, run.error)
            assert shown.count(messages.CRASHED) == 1 and not answers, texts
        assert messages.INTERRUPTED not in shown
        assert bot.services.runner.keeper.waiting == 0
    finally:
        await bot.close()
