"""How long stored data lives: the retention purge (in the Store, and as the app's periodic
task), files deleted or changed in Slack, and `/rlm forget` for workspace admins."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from bot_harness import file_shared
from sqlalchemy import text

from bot.ops.housekeeping import Housekeeping
from bot.slack import messages
from bot.storage import Purged, Store
from bot.storage._engine import create_engine

DAY = timedelta(days=1)


async def backdate(database_url: str, table: str, days: float, where: str = "1 = 1") -> None:
    """Make rows look `days` old, as time would."""
    moment = datetime.now(UTC) - timedelta(days=days)
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text(f"UPDATE {table} SET created_at = :moment WHERE {where}"),
                {"moment": moment},
            )
    finally:
        await engine.dispose()


async def count(database_url: str, table: str) -> int:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            return int(await connection.scalar(text(f"SELECT count(*) FROM {table}")))
    finally:
        await engine.dispose()


async def run_with_steps(store: Store, *, channel_id: str = "C1", finished: bool = True) -> int:
    run_id = await store.create_run(
        team_id="T1",
        channel_id=channel_id,
        thread_ts="1.1",
        user_id="U1",
        question="what did the channel say?",
        root_model="openai:root",
        sub_model="openai:sub",
        trigger="command",
        status="running",
    )
    await store.add_context_source(run_id, kind="channel_history", ref=channel_id, items=3, chars=9)
    await store.record_iteration(
        run_id,
        iteration=1,
        root_reply="r",
        code="print(context[:50])",
        output="quoted channel text",
        subcalls=0,
        input_tokens=1,
        output_tokens=1,
        seconds=0.1,
    )
    if finished:
        await store.finish_run(
            run_id,
            status="finished",
            answer="an answer quoting the channel",
            error=None,
            iterations=1,
            subcalls=0,
            input_tokens=1,
            output_tokens=1,
            seconds=0.1,
        )
    return run_id


async def keep_file(store: Store, file_id: str, *, channel_id: str = "C1") -> None:
    await store.save_file(
        team_id="T1",
        channel_id=channel_id,
        file_id=file_id,
        name=f"{file_id}.txt",
        mimetype="text/plain",
        size=4,
        text=f"text of {file_id}",
        thread_ts=None,
        user_id="U1",
    )


# Retention


async def test_the_purge_removes_what_is_past_retention_and_keeps_the_rest(database_url):
    store = await Store.open(database_url)
    try:
        old, recent = await run_with_steps(store), await run_with_steps(store)
        old_but_running = await run_with_steps(store, finished=False)
        await keep_file(store, "FOLD")
        await keep_file(store, "FNEW")
        assert await store.claim_event("Ev-old") and await store.claim_event("Ev-new")
        await backdate(database_url, "runs", 91, f"id IN ({old}, {old_but_running})")
        await backdate(database_url, "files", 91, "file_id = 'FOLD'")
        await backdate(database_url, "handled_events", 1.5, "event_id = 'Ev-old'")

        purged = await Housekeeping(store, retention_days=90).run_once()

        assert purged == Purged(runs=1, files=1, events=1)
        assert {r.id for r in await store.list_runs()} == {recent, old_but_running}
        assert await store.list_iterations(old) == []
        assert len(await store.list_iterations(recent)) == 1
        assert await count(database_url, "context_sources") == 2
        assert [f.file_id for f in await store.channel_files("T1", "C1")] == ["FNEW"]
        assert await store.claim_event("Ev-old") is True  # forgotten, so claimable again
        assert await store.claim_event("Ev-new") is False
        assert await Housekeeping(store, retention_days=90).run_once() == Purged()
    finally:
        await store.close()


async def test_the_purge_goes_by_the_configured_days(database_url):
    store = await Store.open(database_url)
    try:
        run_id = await run_with_steps(store)
        await backdate(database_url, "runs", 8)
        assert (await Housekeeping(store, retention_days=10).run_once()).runs == 0
        assert (await Housekeeping(store, retention_days=7).run_once()).runs == 1
        assert await store.get_run(run_id) is None
    finally:
        await store.close()


async def test_the_app_purges_on_its_own_at_start(make_bot, database_url):
    store = await Store.open(database_url)
    await run_with_steps(store)
    await keep_file(store, "F1")
    await store.close()
    await backdate(database_url, "runs", 40)
    await backdate(database_url, "files", 40)

    bot = await make_bot(rlm_retention_days=30)
    deadline = time.monotonic() + 20
    while await bot.store.list_runs() or await bot.store.channel_files("T1", "C1"):
        assert time.monotonic() < deadline, "the app never purged"
        await asyncio.sleep(0.05)
    assert bot.services.housekeeping is not None


# Files deleted or changed in Slack


async def test_a_file_deleted_in_slack_is_deleted_here(bot, slack):
    slack.add_file("F1", "notes.txt", b"the launch is Monday", channel_id="C1", user="U1")
    slack.add_file("F2", "other.txt", b"keep me", channel_id="C1", user="U1")
    for file_id in ("F1", "F2"):
        await bot.events.event(file_shared("C1", file_id))
    await bot.settle()
    assert len(await bot.store.channel_files("T1", "C1")) == 2

    del slack.files["F1"]
    reply = await bot.events.event({"type": "file_deleted", "file_id": "F1", "event_ts": "1.2"})
    assert reply.status == 200
    await bot.settle()
    assert [f.file_id for f in await bot.store.channel_files("T1", "C1")] == ["F2"]


async def test_a_file_changed_in_slack_is_read_again_in_every_channel_that_keeps_it(bot, slack):
    slack.add_channel("C2", "random")
    file = slack.add_file("F1", "notes.txt", b"first draft", channel_id="C1", user="U1")
    for channel in ("C1", "C2"):
        await bot.events.event(file_shared(channel, "F1"))
    await bot.settle()
    file["_content"] = b"second draft, longer"
    file["size"] = len(file["_content"])

    change = {"type": "file_change", "file_id": "F1", "file": {"id": "F1"}}
    await bot.events.event(change)
    await bot.settle()
    for channel in ("C1", "C2"):
        [kept] = await bot.store.channel_files("T1", channel)
        assert (kept.text, kept.size) == ("second draft, longer", 20)

    del slack.files["F1"]  # changed, then gone by the time we ask
    await bot.events.event(change)
    await bot.settle()
    assert await bot.store.file_copies("T1", "F1") == []


async def test_a_change_to_a_file_never_kept_fetches_nothing(bot, slack):
    slack.add_file("F9", "elsewhere.txt", b"not ours", channel_id="C1", user="U1")
    await bot.events.event({"type": "file_change", "file_id": "F9", "file": {"id": "F9"}})
    await bot.settle()
    assert slack.calls_to("files.info") == [] and slack.calls_to("files.download") == []


async def test_a_change_slack_cannot_serve_right_now_keeps_the_text(bot, slack):
    slack.add_file("F1", "notes.txt", b"kept text", channel_id="C1", user="U1")
    await bot.events.event(file_shared("C1", "F1"))
    await bot.settle()
    slack.fail("files.info", "internal_error")
    await bot.events.event({"type": "file_change", "file_id": "F1", "file": {"id": "F1"}})
    await bot.settle()
    [kept] = await bot.store.channel_files("T1", "C1")
    assert kept.text == "kept text"


async def test_a_file_event_for_another_workspace_touches_nothing_here(bot, slack):
    slack.add_file("F1", "notes.txt", b"ours", channel_id="C1", user="U1")
    await bot.events.event(file_shared("C1", "F1"))
    await bot.settle()
    await bot.events.event({"type": "file_deleted", "file_id": "F1"}, team_id="T2")
    await bot.settle()
    assert len(await bot.store.channel_files("T1", "C1")) == 1


# /rlm forget


async def test_forget_by_an_admin_deletes_this_channels_runs_and_files_only(
    make_bot, slack, database_url
):
    slack.add_user("U9", "Ada Admin", admin=True)
    slack.add_channel("C2", "random")
    bot = await make_bot()
    store = bot.store
    here = [await run_with_steps(store), await run_with_steps(store)]
    running = await run_with_steps(store, finished=False)
    there = await run_with_steps(store, channel_id="C2")
    slack.add_file("F1", "notes.txt", b"channel one's file", channel_id="C1", user="U1")
    await bot.events.event(file_shared("C1", "F1"))
    await keep_file(store, "F2", channel_id="C2")
    await bot.settle()

    reply = await bot.events.command("forget", user_id="U9")
    assert reply.status == 200
    await bot.settle()

    assert slack.ephemerals("U9") == [messages.forget_done(runs=2, files=1, running=1)]
    assert {r.id for r in await store.list_runs()} == {running, there}
    for run_id in here:
        assert await store.list_iterations(run_id) == []
    assert await store.channel_files("T1", "C1") == []
    assert [f.file_id for f in await store.channel_files("T1", "C2")] == ["F2"]
    # Forgotten as handled, too: sharing the file again reads it again.
    await bot.events.event(file_shared("C1", "F1"))
    await bot.settle()
    assert [f.file_id for f in await store.channel_files("T1", "C1")] == ["F1"]


async def test_forget_by_someone_else_is_refused_and_deletes_nothing(bot, slack):
    run_id = await run_with_steps(bot.store)
    await bot.events.command("forget", user_id="U2")
    await bot.settle()
    assert slack.ephemerals("U2") == [messages.FORGET_ADMINS_ONLY]
    assert [r.id for r in await bot.store.list_runs()] == [run_id]
    [users_info] = slack.calls_to("users.info")
    assert users_info.params["user"] == "U2"


async def test_forget_when_slack_cannot_say_who_is_admin_deletes_nothing(bot, slack):
    slack.add_user("U9", "Ada Admin", owner=True)
    run_id = await run_with_steps(bot.store)
    slack.missing_scopes.add("users:read")
    await bot.events.command("forget", user_id="U9")
    await bot.settle()
    assert slack.ephemerals("U9") == [messages.forget_failed("missing_scope")]
    assert [r.id for r in await bot.store.list_runs()] == [run_id]
