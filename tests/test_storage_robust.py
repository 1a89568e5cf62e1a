"""The Store under what production brings: awkward text, huge counts, racing writers, many
processes opening one new database, a database server that drops its connections or is not
there. Runs on the suite's database; the PostgreSQL-only checks say so and skip on SQLite."""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from databases import POSTGRES_ONLY, run_in_thread, terminate_connections
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from bot.storage import Store
from bot.storage._engine import create_engine
from bot.storage._migrate import head_revision

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
async def store(database_url: str):
    store = await Store.open(database_url)
    yield store
    await store.close()


async def new_run(store: Store, **fields) -> int:
    values = dict(
        team_id="T1",
        channel_id="C1",
        thread_ts=None,
        user_id="U1",
        question="q",
        root_model="openai:gpt-4o",
        sub_model="openai:gpt-4o-mini",
        trigger="command",
        status="running",
    )
    return await store.create_run(**(values | fields))


async def record(store: Store, run_id: int, iteration: int, **fields) -> None:
    values = dict(
        iteration=iteration,
        root_reply="r",
        code="c",
        output="o",
        subcalls=1,
        input_tokens=10,
        output_tokens=5,
        seconds=0.5,
    )
    await store.record_iteration(run_id, **(values | fields))


# Text and numbers


async def test_nul_characters_and_lone_surrogates_are_stored_replaced(store):
    run_id = await new_run(store, question="why\x00?")
    await record(store, run_id, 1, code="print('\\x00')", output="a\x00b\udc80c")
    [stored] = await store.list_iterations(run_id)
    assert stored.output == "a\ufffdb\ufffdc"
    assert (await store.get_run(run_id)).question == "why\ufffd?"
    await store.save_file(
        team_id="T1",
        channel_id="C1",
        file_id="F1",
        name="nul\x00.txt",
        mimetype=None,
        size=3,
        text="x\x00y",
        thread_ts=None,
        user_id=None,
    )
    [file] = await store.channel_files("T1", "C1")
    assert (file.name, file.text) == ("nul\ufffd.txt", "x\ufffdy")


async def test_names_and_refs_past_their_column_are_cut_not_refused(store):
    run_id = await new_run(store, root_model="openai:" + "m" * 500)
    assert (await store.get_run(run_id)).root_model == ("openai:" + "m" * 500)[:200]
    await store.add_context_source(run_id, kind="file", ref="R" * 1000, items=1, chars=1)
    await store.save_file(
        team_id="T1",
        channel_id="C1",
        file_id="F1",
        name="n" * 5000,
        mimetype="text/" + "x" * 400,
        size=1,
        text="t",
        thread_ts=None,
        user_id=None,
    )
    [file] = await store.channel_files("T1", "C1")
    assert (len(file.name), len(file.mimetype or "")) == (1024, 255)
    assert await store.claim_event("E" * 300) is True
    assert await store.claim_event("E" * 300) is False  # the same id, cut the same way


async def test_sizes_and_token_counts_past_two_to_the_31(store):
    big = 2**31 + 12345
    run_id = await new_run(store)
    await record(store, run_id, 1, input_tokens=big, output_tokens=big, subcalls=big)
    await store.add_context_source(run_id, kind="thread", ref="1.1", items=big, chars=big * 3)
    run = await store.get_run(run_id)
    assert (run.input_tokens, run.output_tokens, run.subcalls) == (big, big, big)
    await store.finish_run(
        run_id,
        status="finished",
        answer="a",
        error=None,
        iterations=1,
        subcalls=big,
        input_tokens=big * 4,
        output_tokens=big,
        seconds=1.0,
    )
    assert (await store.get_run(run_id)).input_tokens == big * 4
    await store.save_file(
        team_id="T1",
        channel_id="C1",
        file_id="F1",
        name="huge",
        mimetype=None,
        size=big * 2,
        text="t",
        thread_ts=None,
        user_id=None,
    )
    assert (await store.channel_files("T1", "C1"))[0].size == big * 2


async def test_statement_parameters_stay_out_of_errors_and_logs(store, caplog):
    caplog.set_level(logging.DEBUG)
    secret = "print('SECRET-CODE-0451')"
    with pytest.raises(IntegrityError) as caught:
        async with store._engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO iterations (run_id, iteration, root_reply, code, output, "
                    "subcalls, input_tokens, output_tokens, seconds, created_at) VALUES "
                    "(:run, 1, 'r', :code, :code, 0, 0, 0, 0, CURRENT_TIMESTAMP)"
                ),
                {"run": 987654, "code": secret},  # no such run: the foreign key refuses it
            )
    assert "SECRET-CODE" not in str(caught.value)
    assert "SECRET-CODE" not in caplog.text


# Racing writers


async def test_fifty_iterations_from_two_stores_at_once_keep_exact_totals(store, database_url):
    other = await Store.open(database_url)  # a second pool, as another replica would have
    try:
        run_id = await new_run(store)
        writers = [store if i % 2 else other for i in range(50)]
        await asyncio.gather(*(record(w, run_id, i) for i, w in enumerate(writers)))
        run = await store.get_run(run_id)
        assert (run.iterations, run.subcalls, run.input_tokens, run.output_tokens) == (
            50,
            50,
            500,
            250,
        )
        assert len(await other.list_iterations(run_id)) == 50
    finally:
        await other.close()


async def test_finish_racing_a_late_iteration_keeps_the_final_totals(store, database_url):
    other = await Store.open(database_url)
    try:
        for attempt in range(30):
            run_id = await new_run(store)
            await record(store, run_id, 1)
            finish = store.finish_run(
                run_id,
                status="finished",
                answer="a",
                error=None,
                iterations=7,
                subcalls=70,
                input_tokens=7000,
                output_tokens=700,
                seconds=7.0,
            )
            late = record(other, run_id, 2 + attempt % 3, input_tokens=1)
            await asyncio.gather(late, finish)
            run = await store.get_run(run_id)
            assert (run.iterations, run.subcalls, run.input_tokens, run.output_tokens) == (
                7,
                70,
                7000,
                700,
            ), f"attempt {attempt}"
    finally:
        await other.close()


# PostgreSQL: many processes, dropped connections, no server

OPENER = textwrap.dedent(
    """
    import asyncio, sys
    from bot.storage import Store

    async def main():
        store = await Store.open(sys.argv[1])
        await store.claim_event("opened-" + sys.argv[2])
        await store.close()

    asyncio.run(main())
    """
)


@POSTGRES_ONLY
async def test_ten_processes_opening_a_fresh_database_at_once_all_succeed(databases):
    url = databases.new()
    openers = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", OPENER, url, str(n), cwd=ROOT, stderr=asyncio.subprocess.PIPE
        )
        for n in range(10)
    ]
    results = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in openers)), 120)
    errors = [err.decode() for (_, err), p in zip(results, openers, strict=True) if p.returncode]
    assert errors == []
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            query = text("SELECT version_num FROM alembic_version")
            versions = list(await connection.execute(query))
            opened = await connection.scalar(
                text("SELECT count(*) FROM handled_events WHERE event_id LIKE 'opened-%'")
            )
    finally:
        await engine.dispose()
    assert [tuple(v) for v in versions] == [(head_revision(),)]
    assert opened == 10


@POSTGRES_ONLY
async def test_four_opens_in_one_process_at_once(databases):
    url = databases.new()
    stores = await asyncio.wait_for(asyncio.gather(*(Store.open(url) for _ in range(4))), 60)
    for store in stores:
        assert await store.claim_event(f"E{id(store)}")
        await store.close()


@POSTGRES_ONLY
async def test_connections_cut_mid_run_the_next_write_succeeds(store, database_url):
    run_id = await new_run(store)
    await asyncio.gather(*(record(store, run_id, i) for i in range(1, 6)))  # fill the pool
    assert run_in_thread(lambda: terminate_connections(database_url)) >= 1
    await record(store, run_id, 6)
    await store.finish_run(
        run_id,
        status="finished",
        answer="a",
        error=None,
        iterations=6,
        subcalls=6,
        input_tokens=60,
        output_tokens=30,
        seconds=3.0,
    )
    assert len(await store.list_iterations(run_id)) == 6
    assert (await store.get_run(run_id)).status == "finished"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_server_that_is_not_there_is_one_clear_line():
    port = _closed_port()
    url = f"postgresql+asyncpg://someone:s3cret@127.0.0.1:{port}/db"
    with pytest.raises(ValueError) as caught:
        await Store.open(url)
    message = str(caught.value)
    assert message == (
        f"The database at postgresql+asyncpg://someone:***@127.0.0.1:{port}/db could not be "
        "opened (connection refused: is the database server running and reachable there?); "
        "check DATABASE_URL."
    )
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_rlm_bot_migrate_against_a_missing_server_says_so_in_one_line(tmp_path):
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{_closed_port()}/db"
    done = subprocess.run(
        [sys.executable, "-m", "bot", "migrate"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "connection refused" in done.stderr and "DATABASE_URL" in done.stderr
