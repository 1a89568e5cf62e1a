"""Another process holding the database's write lock for seconds in the middle of a run (on
SQLite the file's lock, on PostgreSQL an EXCLUSIVE lock on the app's tables): the app's
writes wait for it and succeed, and Slack's requests are still answered at once."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from datetime import UTC, datetime

from bot_harness import mention, wait_until
from sqlalchemy.engine import make_url

from tests.faults.checks import check_run_ended_cleanly

HOLD_SECONDS = 2.0


class WriteLockHolder(threading.Thread):
    """A separate connection that takes the write lock and sits on it."""

    def __init__(self, database_url: str) -> None:
        super().__init__(daemon=True)
        self.url = make_url(database_url)
        self.locked = threading.Event()
        self.released_at: datetime | None = None

    def run(self) -> None:
        if self.url.get_backend_name() == "postgresql":
            asyncio.run(self._hold_postgres())
            return
        connection = sqlite3.connect(self.url.database or "", timeout=30, isolation_level=None)
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("CREATE TABLE IF NOT EXISTS other_tool (x INTEGER)")
            self.locked.set()
            time.sleep(HOLD_SECONDS)
            self.released_at = datetime.now(UTC)
            connection.execute("COMMIT")
        finally:
            connection.close()

    async def _hold_postgres(self) -> None:
        import asyncpg

        connection = await asyncpg.connect(
            host=self.url.host,
            port=self.url.port or 5432,
            user=self.url.username,
            password=self.url.password,
            database=self.url.database,
        )
        try:
            async with connection.transaction():
                # EXCLUSIVE: others may read these tables, but every write waits.
                await connection.execute(
                    "LOCK TABLE runs, iterations, context_sources IN EXCLUSIVE MODE"
                )
                self.locked.set()
                await asyncio.sleep(HOLD_SECONDS)
                self.released_at = datetime.now(UTC)
        finally:
            await connection.close()


async def test_writes_wait_out_a_lock_held_by_another_connection(
    make_bot, slack, llm_server, database_url
):
    bot = await make_bot()
    slack.add_message("C1", "something to read", user="U2")
    holder = WriteLockHolder(database_url)

    def first_step(conversation):
        holder.start()  # the lock is taken while the run is in its first iteration
        assert holder.locked.wait(5)
        return "Looking.\n```repl\nprint(len(context))\n```"

    llm_server.script_root(first_step, "FINAL(all read)")
    await bot.events.command("ask anything?")
    await wait_until(holder.locked.is_set)

    # While the lock is held: requests are acknowledged at once, and reads still work.
    started = time.monotonic()
    usage = await bot.events.command("usage")
    reply = await bot.events.event(mention("C1", "<@UBOT> and this?", slack.next_ts()))
    assert usage.status == reply.status == 200
    assert time.monotonic() - started < 1.0 and "1 run today" in usage.json()["text"]

    await bot.settle(30)
    await asyncio.to_thread(holder.join, 5)
    first, second = await bot.store.list_runs()
    for run in (first, second):
        assert run.status == "finished", (run.id, run.status, run.error)
        await check_run_ended_cleanly(bot, slack, run)
    assert holder.released_at is not None and first.finished_at > holder.released_at
    [one, two] = await bot.store.list_iterations(first.id)
    assert one.code == "print(len(context))" and two.root_reply == "FINAL(all read)"
