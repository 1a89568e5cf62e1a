"""The Store on a real SQLite file: migrations, concurrency, crash recovery and every query."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

import bot.storage
from bot.storage import FileRecord, IterationRecord, RunRecord, Store
from bot.storage._engine import create_engine
from bot.storage._migrate import downgrade, head_revision, upgrade
from bot.storage._models import Base

ROOT = Path(__file__).resolve().parents[1]
TABLES = {"workspaces", "runs", "iterations", "context_sources", "files", "handled_events"}


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "bot.db"  # a directory that does not exist yet


@pytest.fixture
def db_url(db_path: Path) -> str:
    return f"sqlite+aiosqlite:///{db_path}"


@pytest.fixture
async def store(db_url: str):
    store = await Store.open(db_url)
    yield store
    await store.close()


def query(db_path: Path, sql: str, *params: object) -> list[tuple]:
    """Look at the file with the standard library, outside SQLAlchemy and the Store."""
    with sqlite3.connect(db_path) as connection:
        return connection.execute(sql, params).fetchall()


async def new_run(store: Store, *, team_id: str = "T1", status: str = "queued", **fields) -> int:
    values = dict(
        team_id=team_id,
        channel_id="C1",
        thread_ts=None,
        user_id="U1",
        question="What changed?",
        root_model="openai:gpt-4o",
        sub_model="openai:gpt-4o-mini",
        trigger="command",
        status=status,
    )
    values.update(fields)
    return await store.create_run(**values)


async def record(store: Store, run_id: int, iteration: int, *, tokens: int = 10) -> None:
    await store.record_iteration(
        run_id,
        iteration=iteration,
        root_reply=f"reply {iteration}",
        code=f"print({iteration})",
        output=str(iteration),
        subcalls=2,
        input_tokens=tokens,
        output_tokens=tokens // 2,
        seconds=0.5,
    )


async def finish(store: Store, run_id: int, *, tokens: int = 100, status: str = "finished"):
    await store.finish_run(
        run_id,
        status=status,
        answer="It grew.",
        error=None,
        iterations=3,
        subcalls=7,
        input_tokens=tokens,
        output_tokens=tokens // 4,
        seconds=12.5,
    )


def test_public_names_are_exported():
    assert {"Store", "RunRecord", "IterationRecord", "FileRecord"} <= set(bot.storage.__all__)
    assert len(set(bot.storage.__all__)) == len(bot.storage.__all__)
    for name in bot.storage.__all__:
        assert hasattr(bot.storage, name)


# Migrations


async def test_open_migrates_a_new_database_to_head(store, db_path):
    tables = {row[0] for row in query(db_path, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == TABLES | {"alembic_version"}
    assert query(db_path, "SELECT version_num FROM alembic_version") == [(head_revision(),)]
    assert head_revision() == "0003"


async def test_open_is_idempotent_and_keeps_data(db_url, db_path):
    first = await Store.open(db_url)
    run_id = await new_run(first)
    await first.close()
    for _ in range(2):
        again = await Store.open(db_url)
        assert (await again.get_run(run_id)).question == "What changed?"
        await again.close()
    assert query(db_path, "SELECT version_num FROM alembic_version") == [(head_revision(),)]


async def test_two_processes_worth_of_opens_at_once_migrate_once(db_url, db_path):
    stores = await asyncio.gather(*(Store.open(db_url) for _ in range(4)))
    assert query(db_path, "SELECT count(*) FROM alembic_version") == [(1,)]
    for store in stores:
        await store.close()


async def test_migrated_schema_matches_the_models(store, db_url):
    engine = create_engine(db_url)

    def differences(connection):
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)

    async with engine.connect() as connection:
        assert await connection.run_sync(differences) == []
    await engine.dispose()


async def test_migrations_downgrade_to_nothing_and_back(store, db_url, db_path):
    engine = create_engine(db_url)
    await downgrade(engine, "base")
    tables = {row[0] for row in query(db_path, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"alembic_version"}
    await upgrade(engine)
    tables = {row[0] for row in query(db_path, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == TABLES | {"alembic_version"}
    await engine.dispose()


def test_alembic_command_line_migrates_and_finds_nothing_to_autogenerate(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    for args in (["upgrade", "head"], ["check"]):
        done = subprocess.run(
            [sys.executable, "-m", "alembic", "-x", f"url={url}", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
    assert query(tmp_path / "cli.db", "SELECT version_num FROM alembic_version") == [
        (head_revision(),)
    ]


async def test_sqlite_connections_wait_for_locks_and_enforce_foreign_keys(store, db_path):
    assert query(db_path, "PRAGMA journal_mode") == [("wal",)]
    async with store._engine.connect() as connection:
        assert (await connection.scalar(text("PRAGMA busy_timeout"))) >= 5000
        assert (await connection.scalar(text("PRAGMA foreign_keys"))) == 1


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///sync-driver.db",
        "postgresql://someone:s3cret@localhost/db",
        "nosuchdatabase+driver://localhost/db",
        "not a url at all",
    ],
)
async def test_open_explains_an_unusable_url_without_showing_the_password(url):
    with pytest.raises(ValueError, match="cannot be used") as caught:
        await Store.open(url)
    message = str(caught.value)
    assert "s3cret" not in message
    assert "sqlite+aiosqlite:///rlm.db" in message


async def test_open_explains_a_database_file_that_cannot_be_opened(tmp_path):
    (tmp_path / "a-directory.db").mkdir()
    with pytest.raises(ValueError, match=r"could not be opened \(unable to open database file\)"):
        await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'a-directory.db'}")
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ValueError, match="cannot be used"):
        await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'a-file' / 'bot.db'}")


async def test_an_in_memory_database_works_for_concurrent_callers():
    store = await Store.open("sqlite+aiosqlite://")
    run_id = await new_run(store)
    await asyncio.gather(*(record(store, run_id, i) for i in range(10)))
    assert len(await store.list_iterations(run_id)) == 10
    await store.close()


# Events


async def test_an_event_is_claimed_once(store):
    assert await store.claim_event("Ev1") is True
    assert await store.claim_event("Ev1") is False
    assert await store.claim_event("Ev2") is True


async def test_twenty_concurrent_claims_of_one_event_have_one_winner(db_url):
    first, second = await Store.open(db_url), await Store.open(db_url)
    claims = [(first if i % 2 else second).claim_event("EvSame") for i in range(20)]
    results = await asyncio.gather(*claims)
    assert results.count(True) == 1 and results.count(False) == 19
    await first.close()
    await second.close()


async def test_an_empty_event_id_is_refused(store):
    with pytest.raises(ValueError, match="must not be empty"):
        await store.claim_event("")


# Workspaces and runs


async def test_workspaces_are_created_and_renamed(store, db_path):
    await store.ensure_workspace("T9")
    await store.ensure_workspace("T9", "Acme")
    await store.ensure_workspace("T9")  # no name: the known one stays
    await new_run(store, team_id="T8")  # a run makes its workspace exist
    rows = query(db_path, "SELECT team_id, name FROM workspaces ORDER BY team_id")
    assert rows == [("T8", None), ("T9", "Acme")]


async def test_a_new_run_reads_back_with_utc_timestamps(store):
    before = datetime.now(UTC)
    run_id = await new_run(store, thread_ts="111.222", trigger="mention")
    run = await store.get_run(run_id)
    assert isinstance(run, RunRecord)
    assert (run.id, run.team_id, run.channel_id, run.thread_ts) == (run_id, "T1", "C1", "111.222")
    assert (run.user_id, run.question, run.status, run.trigger) == (
        "U1",
        "What changed?",
        "queued",
        "mention",
    )
    assert (run.root_model, run.sub_model) == ("openai:gpt-4o", "openai:gpt-4o-mini")
    assert (run.iterations, run.subcalls, run.input_tokens, run.output_tokens) == (0, 0, 0, 0)
    assert (run.answer, run.error, run.stopped_by, run.finished_at) == (None, None, None, None)
    assert run.created_at.tzinfo is not None and run.created_at.utcoffset() == timedelta(0)
    assert before <= run.created_at <= datetime.now(UTC)
    assert await store.get_run(run_id + 100) is None


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"trigger": "shortcut"}, "trigger must be one of command, mention; got 'shortcut'"),
        ({"status": "done"}, "status must be one of queued, running, finished"),
    ],
)
async def test_a_run_with_an_unknown_trigger_or_status_is_refused(store, fields, message):
    with pytest.raises(ValueError, match=message):
        await new_run(store, **fields)
    assert await store.list_runs() == []


async def test_status_changes_and_thread_assignment(store):
    run_id = await new_run(store)
    await store.set_run_status(run_id, "running", thread_ts="123.456")
    run = await store.get_run(run_id)
    assert (run.status, run.thread_ts, run.finished_at) == ("running", "123.456", None)
    await store.set_run_status(run_id, "stopped")
    run = await store.get_run(run_id)
    assert (run.status, run.thread_ts) == ("stopped", "123.456")
    assert run.finished_at is not None and run.finished_at.tzinfo is not None


async def test_status_changes_refuse_unknown_runs_and_statuses(store):
    run_id = await new_run(store)
    with pytest.raises(ValueError, match="status must be one of"):
        await store.set_run_status(run_id, "paused")
    with pytest.raises(LookupError, match=rf"^Run {run_id + 1} does not exist\.$"):
        await store.set_run_status(run_id + 1, "running")


async def test_context_sources_are_kept_per_run(store, db_path):
    run_id = await new_run(store)
    await store.add_context_source(run_id, kind="channel_history", ref="C1", items=40, chars=900)
    await store.add_context_source(run_id, kind="file", ref="F1", items=1, chars=5000)
    rows = query(db_path, "SELECT run_id, kind, ref, items, chars FROM context_sources ORDER BY id")
    assert rows == [(run_id, "channel_history", "C1", 40, 900), (run_id, "file", "F1", 1, 5000)]
    with pytest.raises(ValueError, match="kind must be one of channel_history, thread, file"):
        await store.add_context_source(run_id, kind="email", ref="x", items=1, chars=1)
    with pytest.raises(LookupError):
        await store.add_context_source(run_id + 1, kind="thread", ref="x", items=1, chars=1)


async def test_iterations_are_committed_as_recorded_and_visible_elsewhere(store, db_url):
    run_id = await new_run(store, status="running")
    await record(store, run_id, 2, tokens=20)
    await record(store, run_id, 1, tokens=10)

    other = await Store.open(db_url)  # another instance, as another process would be
    iterations = await other.list_iterations(run_id)
    assert [i.iteration for i in iterations] == [1, 2]
    assert iterations[0] == IterationRecord(
        run_id=run_id,
        iteration=1,
        root_reply="reply 1",
        code="print(1)",
        output="1",
        subcalls=2,
        input_tokens=10,
        output_tokens=5,
        seconds=0.5,
        created_at=iterations[0].created_at,
    )
    assert iterations[0].created_at.tzinfo is not None
    run = await other.get_run(run_id)  # an unfinished run's totals follow its iterations
    assert (run.status, run.iterations, run.subcalls) == ("running", 2, 4)
    assert (run.input_tokens, run.output_tokens, run.seconds) == (30, 15, 1.0)
    await other.close()


async def test_recording_an_iteration_again_replaces_it(store):
    run_id = await new_run(store)
    await record(store, run_id, 1, tokens=10)
    await record(store, run_id, 1, tokens=40)
    [only] = await store.list_iterations(run_id)
    assert only.input_tokens == 40
    assert (await store.get_run(run_id)).input_tokens == 40


async def test_recording_for_an_unknown_run_is_refused(store):
    with pytest.raises(LookupError, match=r"^Run 77 does not exist\.$"):
        await record(store, 77, 1)


async def test_fifty_concurrent_iterations_are_all_stored(store):
    run_id = await new_run(store, status="running")
    await asyncio.gather(*(record(store, run_id, i) for i in range(50)))
    assert [i.iteration for i in await store.list_iterations(run_id)] == list(range(50))
    run = await store.get_run(run_id)
    assert (run.iterations, run.subcalls, run.input_tokens) == (50, 100, 500)


async def test_two_stores_on_one_file_write_at_once(db_url):
    first, second = await Store.open(db_url), await Store.open(db_url)
    runs = [await new_run(first), await new_run(second)]
    writes = []
    for i in range(30):
        writes.append(record(first, runs[0], i))
        writes.append(record(second, runs[1], i))
        writes.append(second.claim_event(f"Ev{i}"))
        writes.append(first.save_file(**_file(f"F{i}")))
    await asyncio.gather(*writes)
    for run_id in runs:
        assert len(await first.list_iterations(run_id)) == 30
    assert len(await second.channel_files("T1", "C1")) == 30
    assert await first.claim_event("Ev29") is False
    await first.close()
    await second.close()


async def test_finishing_a_run_stores_its_outcome(store):
    run_id = await new_run(store, status="running")
    await record(store, run_id, 1)
    await store.finish_run(
        run_id,
        status="stopped",
        answer=None,
        error="Stopped by a user.",
        iterations=4,
        subcalls=9,
        input_tokens=1000,
        output_tokens=200,
        seconds=33.0,
        stopped_by="U2",
    )
    run = await store.get_run(run_id)
    assert (run.status, run.answer, run.error, run.stopped_by) == (
        "stopped",
        None,
        "Stopped by a user.",
        "U2",
    )
    assert (run.iterations, run.subcalls, run.input_tokens, run.output_tokens, run.seconds) == (
        4,
        9,
        1000,
        200,
        33.0,
    )
    assert run.finished_at is not None and run.finished_at >= run.created_at
    await record(store, run_id, 2)  # a late iteration does not undo the final totals
    assert (await store.get_run(run_id)).input_tokens == 1000


async def test_finishing_needs_a_final_status_and_a_known_run(store):
    run_id = await new_run(store)
    with pytest.raises(ValueError, match="a finished run's status must be one of finished"):
        await finish(store, run_id, status="running")
    with pytest.raises(LookupError):
        await finish(store, run_id + 1)
    assert (await store.get_run(run_id)).status == "queued"


async def test_runs_are_listed_oldest_first_and_filtered(store):
    a = await new_run(store, team_id="T1")
    b = await new_run(store, team_id="T2")
    c = await new_run(store, team_id="T1", status="running")
    assert [r.id for r in await store.list_runs()] == [a, b, c]
    assert [r.id for r in await store.list_runs(team_id="T1")] == [a, c]
    assert [r.id for r in await store.list_runs(status="running")] == [c]
    assert [r.id for r in await store.list_runs(team_id="T2", status="running")] == []
    with pytest.raises(ValueError):
        await store.list_runs(status="bogus")


# Crash and restart


async def test_runs_left_unfinished_are_marked_interrupted_on_restart(db_url):
    before = await Store.open(db_url)
    queued = await new_run(before, channel_id="C7", thread_ts="7.7")
    running = await new_run(before, status="running", channel_id="C8", thread_ts="8.8")
    await record(before, running, 1, tokens=30)
    done = await new_run(before, status="running")
    await finish(before, done)
    await before.close()  # the process goes away without finishing two runs

    after = await Store.open(db_url)
    interrupted = await after.mark_interrupted_runs()
    assert [(r.id, r.channel_id, r.thread_ts, r.status) for r in interrupted] == [
        (queued, "C7", "7.7", "interrupted"),
        (running, "C8", "8.8", "interrupted"),
    ]
    assert all(r.finished_at is not None for r in interrupted)
    assert (await after.get_run(running)).input_tokens == 30  # what it used is kept
    assert (await after.get_run(done)).status == "finished"
    assert await after.mark_interrupted_runs() == []
    await after.close()


WRITER = textwrap.dedent(
    """
    import asyncio, os, sys
    from bot.storage import Store

    async def main():
        store = await Store.open(sys.argv[1])
        run_id = await store.create_run(
            team_id="T1", channel_id="CX", thread_ts="9.9", user_id="U1", question="q",
            root_model="m", sub_model="m", trigger="mention", status="running")
        print(run_id, flush=True)
        for i in range(40):
            await store.record_iteration(
                run_id, iteration=i, root_reply="r", code="c", output="o", subcalls=1,
                input_tokens=1, output_tokens=1, seconds=0.1)
        os._exit(0)  # die mid-run: no finish_run, no close

    asyncio.run(main())
    """
)


async def test_another_process_writing_at_once_then_dying_mid_run(store, db_url):
    writer = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WRITER, db_url, cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    mine = await new_run(store, status="running")
    for i in range(40):
        await record(store, mine, i)
    out, _ = await asyncio.wait_for(writer.communicate(), timeout=60)
    assert writer.returncode == 0
    theirs = int(out.split()[0])

    assert len(await store.list_iterations(mine)) == 40
    assert len(await store.list_iterations(theirs)) == 40
    restarted = await Store.open(db_url)
    interrupted = await restarted.mark_interrupted_runs()
    assert [(r.id, r.channel_id, r.thread_ts) for r in interrupted] == [
        (mine, "C1", None),
        (theirs, "CX", "9.9"),
    ]
    await restarted.close()


# Files


def _file(file_id: str, **fields) -> dict:
    values = dict(
        team_id="T1",
        channel_id="C1",
        file_id=file_id,
        name=f"{file_id}.txt",
        mimetype="text/plain",
        size=11,
        text=f"text of {file_id}",
        thread_ts=None,
        user_id="U1",
    )
    values.update(fields)
    return values


async def test_files_are_kept_per_channel_and_thread(store):
    await store.save_file(**_file("F1"))
    await store.save_file(**_file("F2", thread_ts="5.5", mimetype=None, user_id=None))
    await store.save_file(**_file("F3", channel_id="C2"))
    await store.save_file(**_file("F4", team_id="T2"))

    files = await store.channel_files("T1", "C1")
    assert [f.file_id for f in files] == ["F1", "F2"]
    assert files[1] == FileRecord(
        file_id="F2",
        channel_id="C1",
        thread_ts="5.5",
        name="F2.txt",
        mimetype=None,
        size=11,
        text="text of F2",
        user_id=None,
        created_at=files[1].created_at,
    )
    assert files[0].created_at.tzinfo is not None
    assert [f.file_id for f in await store.thread_files("T1", "C1", "5.5")] == ["F2"]
    assert await store.thread_files("T1", "C1", "6.6") == []
    assert [f.file_id for f in await store.channel_files("T1", "C2")] == ["F3"]
    assert await store.channel_files("T1", "C9") == []


async def test_saving_a_file_again_replaces_it(store):
    await store.save_file(**_file("F1", text="first draft"))
    [first] = await store.channel_files("T1", "C1")
    await store.save_file(**_file("F1", text="second draft", size=12, thread_ts="1.1"))
    [again] = await store.channel_files("T1", "C1")
    assert (again.text, again.size, again.thread_ts) == ("second draft", 12, "1.1")
    assert again.created_at == first.created_at


# Budgets


async def test_tokens_used_since_counts_the_workspaces_recent_runs(store):
    old = await new_run(store)
    await finish(store, old, tokens=1000)  # 1000 in + 250 out
    cutoff = datetime.now(UTC)
    recent = await new_run(store)
    await finish(store, recent, tokens=100)  # 100 + 25
    partial = await new_run(store, status="running")
    await record(store, partial, 1, tokens=10)  # 10 + 5, counted before it finishes
    elsewhere = await new_run(store, team_id="T2")
    await finish(store, elsewhere, tokens=5000)

    assert await store.tokens_used_since("T1", cutoff) == 140
    assert await store.tokens_used_since("T1", cutoff - timedelta(hours=1)) == 1390
    assert await store.tokens_used_since("T1", datetime.now(UTC) + timedelta(seconds=1)) == 0
    assert await store.tokens_used_since("T3", cutoff - timedelta(hours=1)) == 0
    # The same instant in another zone gives the same answer.
    plus_five = cutoff.astimezone(timezone(timedelta(hours=5)))
    assert await store.tokens_used_since("T1", plus_five) == 140


async def test_tokens_used_since_refuses_a_naive_datetime(store):
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.tokens_used_since("T1", datetime.now())


async def test_a_write_cancelled_mid_transaction_still_finishes_and_frees_the_lock(
    tmp_path: Path,
) -> None:
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'cancel.db'}")
    try:
        run_id = await store.create_run(
            team_id="T1",
            channel_id="C1",
            thread_ts=None,
            user_id="U1",
            question="q",
            root_model="openai:root",
            sub_model="openai:sub",
            trigger="command",
        )
        for i in range(20):
            write = asyncio.ensure_future(
                store.record_iteration(
                    run_id,
                    iteration=i + 1,
                    root_reply="r",
                    code="c",
                    output="o",
                    subcalls=0,
                    input_tokens=1,
                    output_tokens=1,
                    seconds=0.1,
                )
            )
            for _ in range(1 + i % 5):
                await asyncio.sleep(0)
            write.cancel()
        started = time.perf_counter()
        await asyncio.wait_for(store.set_run_status(run_id, "running"), 10)
        assert time.perf_counter() - started < 5
    finally:
        await store.close()
    reopened = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'cancel.db'}")
    try:
        # Writes cancelled before they began are not made; every one that began is whole.
        assert 10 <= len(await reopened.list_iterations(run_id)) <= 20
        assert (await reopened.get_run(run_id)).status == "running"  # type: ignore[union-attr]
    finally:
        await reopened.close()


async def test_count_runs_by_day_and_status(tmp_path: Path) -> None:
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'count.db'}")
    try:
        ids = [
            await store.create_run(
                team_id=team,
                channel_id="C1",
                thread_ts=None,
                user_id="U1",
                question="q",
                root_model="openai:root",
                sub_model="openai:sub",
                trigger="command",
            )
            for team in ("T1", "T1", "T1", "T2")
        ]
        await store.set_run_status(ids[0], "running")
        await store.finish_run(
            ids[1],
            status="finished",
            answer="a",
            error=None,
            iterations=1,
            subcalls=0,
            input_tokens=1,
            output_tokens=1,
            seconds=1.0,
        )
        assert await store.count_runs("T1") == 3
        assert await store.count_runs("T1", statuses=("queued", "running")) == 2
        assert await store.count_runs("T1", since=datetime.now(UTC) + timedelta(hours=1)) == 0
        assert await store.count_runs("T1", since=datetime.now(UTC) - timedelta(hours=1)) == 3
        with pytest.raises(ValueError):
            await store.count_runs("T1", statuses=("nonsense",))
    finally:
        await store.close()
