"""`rlm-bot check` tells the truth, and `rlm-bot migrate` goes where it is told.

Check: Redis that is not there, a schema behind the newest, OAuth mode (no bot token to test;
the installation store read and the encryption key proved on what is stored; a wrong key
also stops the app's start). Migrate: `--sql` from the database's own revision, `--to REV`
down and back up with rows kept, an unknown revision refused in one line.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
from cryptography.fernet import Fernet
from oauth_flow import oauth_settings
from slack_sdk.oauth.installation_store import Installation
from sqlalchemy import text
from test_bot_cli import _closed_port, _settings, rlm_bot
from test_migration_walk import fill_every_table, snapshot_tables

from bot.__main__ import StartupError, serve
from bot.ops.cli import EXIT_CHECK_FAILED, EXIT_OK, check
from bot.storage import Store
from bot.storage._crypto import TokenCipher
from bot.storage._engine import create_engine
from bot.storage._installations import InstallationStore
from bot.storage._migrate import current_revision, head_revision, revisions, upgrade

WRITTEN_WITH = Fernet.generate_key().decode()


def _lines(capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    out = capsys.readouterr().out.splitlines()
    assert all(line[:5] in ("ok   ", "FAIL ") for line in out), out
    return {line[5:].split(":", 1)[0]: line for line in out}


@pytest.fixture
def redis_url(tmp_path) -> Iterator[str]:
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed: cannot test a Redis that answers")
    port = _closed_port()
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.kill()
        process.wait()


async def test_check_reports_a_redis_that_is_not_there(slack, llm_server, database_url, capsys):
    url = f"redis://127.0.0.1:{_closed_port()}/0"
    settings = _settings(slack, llm_server, database_url, redis_url=url)
    assert await check(settings) == EXIT_CHECK_FAILED
    line = _lines(capsys)["redis"]
    assert line.startswith(f"FAIL redis: {url} could not be reached (")
    assert line.endswith("check REDIS_URL and that Redis runs")


async def test_check_pings_a_redis_that_answers(slack, llm_server, database_url, redis_url, capsys):
    settings = _settings(slack, llm_server, database_url, redis_url=redis_url)
    assert await check(settings) == EXIT_OK
    assert _lines(capsys)["redis"] == f"ok   redis: {redis_url} answered PING"


async def test_check_says_a_schema_behind_the_newest_is_behind(
    slack, llm_server, database_url, capsys
):
    engine = create_engine(database_url)
    await upgrade(engine, "0001")
    await engine.dispose()
    assert await check(_settings(slack, llm_server, database_url)) == EXIT_CHECK_FAILED
    line = _lines(capsys)["database"]
    assert line.startswith("FAIL database: ")
    assert line.endswith(
        f"schema at 0001, behind the newest {head_revision()}: run `rlm-bot migrate`"
    )


async def _installed(database_url: str, key: str, teams: tuple[str, ...] = ("T1", "T2")) -> None:
    from slack_oauth import CLIENT_ID

    store = await Store.open(database_url)
    installations = InstallationStore(store=store, client_id=CLIENT_ID, cipher=TokenCipher(key))
    try:
        for team in teams:
            await installations.async_save(
                Installation(
                    app_id="A1",
                    team_id=team,
                    bot_token=f"xoxb-{team}-secret",
                    bot_id="B1",
                    bot_user_id="UBOT",
                    bot_scopes="chat:write",
                    user_id="UINSTALLER",
                )
            )
    finally:
        await store.close()


async def test_check_in_oauth_mode_proves_the_key_on_stored_tokens_and_tests_no_bot_token(
    slack, llm_server, database_url, capsys
):
    await _installed(database_url, WRITTEN_WITH)
    older = Fernet.generate_key().decode()
    keys = f"{Fernet.generate_key().decode()},{WRITTEN_WITH},{older}"  # rolled: newest first
    settings = _settings(
        slack, llm_server, database_url, **oauth_settings(slack, rlm_encryption_key=keys)
    )
    assert await check(settings) == EXIT_OK
    lines = _lines(capsys)
    assert lines["settings"].endswith("OAuth installs (no SLACK_BOT_TOKEN)")
    assert "slack" not in lines and "auth.test" not in [c.method for c in slack.calls]
    assert lines["installations"] == (
        "ok   installations: 2 workspace(s) installed; RLM_ENCRYPTION_KEY decrypts all 4 "
        "stored token(s); 4 written with an older key (the app rewrites them with the newest "
        "at start; then the old key can go)"
    )


async def test_a_wrong_encryption_key_fails_the_check_and_stops_the_start(
    slack, llm_server, database_url, capsys
):
    await _installed(database_url, WRITTEN_WITH)
    wrong = Fernet.generate_key().decode()
    settings = _settings(
        slack, llm_server, database_url, **oauth_settings(slack, rlm_encryption_key=wrong)
    )
    assert await check(settings) == EXIT_CHECK_FAILED
    line = _lines(capsys)["installations"]
    expected = (
        "RLM_ENCRYPTION_KEY cannot decrypt 4 of the 4 token(s) stored in the database "
        "(workspaces T1, T2): it is not the key they were written with"
    )
    assert line.startswith(f"FAIL installations: {expected}")
    assert WRITTEN_WITH not in line and wrong not in line and "xoxb" not in line
    with pytest.raises(StartupError) as caught:
        await serve(settings)
    assert str(caught.value).startswith(expected) and "\n" not in str(caught.value)
    assert slack.calls == []


async def test_oauth_mode_with_nothing_installed_yet_is_fine(
    slack, llm_server, database_url, capsys
):
    settings = _settings(slack, llm_server, database_url, **oauth_settings(slack))
    assert await check(settings) == EXIT_OK
    line = _lines(capsys)["installations"]
    assert line.startswith("ok   installations: ")
    assert "none stored yet" in line or "0 workspace(s) installed" in line


async def _at(database_url: str, revision: str) -> None:
    engine = create_engine(database_url)
    await upgrade(engine, revision)
    await engine.dispose()


async def test_migrate_sql_starts_from_the_database_revision(tmp_path, database_url):
    await _at(database_url, "0003")
    done = rlm_bot("migrate", "--sql", cwd=tmp_path, DATABASE_URL=database_url)
    assert done.returncode == 0, done.stderr
    chain = revisions()
    assert (
        "CREATE TABLE runs" not in done.stdout and "CREATE TABLE alembic_version" not in done.stdout
    )
    assert "version_num='0003'" not in done.stdout  # 0003 is applied already
    assert (
        "UPDATE alembic_version SET version_num='0004' WHERE alembic_version.version_num = '0003'"
        in done.stdout
    )
    for newer in chain[chain.index("0004") :]:
        assert f"SET version_num='{newer}'" in done.stdout
    assert "CREATE TABLE run_feedback" in done.stdout
    engine = create_engine(database_url)
    assert await current_revision(engine) == "0003"  # printed, not applied
    await engine.dispose()
    down = rlm_bot("migrate", "--sql", "--to", "0002", cwd=tmp_path, DATABASE_URL=database_url)
    if database_url.startswith("sqlite"):  # a table copy needs the live table: said so
        assert down.returncode == 2 and down.stderr.count("\n") == 1
        assert "run `rlm-bot migrate --to 0002`" in down.stderr
    else:
        assert down.returncode == 0, down.stderr
        step = "SET version_num='0002' WHERE alembic_version.version_num = '0003'"
        assert step in down.stdout and "DROP COLUMN owner" in down.stdout


def test_migrate_sql_from_a_given_revision_needs_no_database(tmp_path):
    url = f"postgresql+asyncpg://someone@127.0.0.1:{_closed_port()}/db"
    done = rlm_bot("migrate", "--sql", "--from", "0005", cwd=tmp_path, DATABASE_URL=url)
    assert done.returncode == 0, done.stderr
    assert (
        "CREATE TABLE slack_installations" in done.stdout and "CREATE TABLE runs" not in done.stdout
    )
    refused = rlm_bot("migrate", "--sql", cwd=tmp_path, DATABASE_URL=url)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.rstrip().endswith(
        "give `--from REV` (`base` for an empty database) to print without connecting"
    )


async def test_migrate_to_a_revision_goes_down_and_back_up_keeping_rows(tmp_path, database_url):
    await _at(database_url, "head")
    engine = create_engine(database_url)
    async with engine.begin() as connection:
        await connection.run_sync(fill_every_table, 1)
    async with engine.connect() as connection:
        before = await connection.run_sync(snapshot_tables)
    head = head_revision()
    down = rlm_bot("migrate", "--to", "0003", cwd=tmp_path, DATABASE_URL=database_url)
    assert down.returncode == 0, down.stderr
    assert down.stdout.endswith(f"migrated down from {head} to 0003.\n")
    async with engine.connect() as connection:
        low = await connection.run_sync(snapshot_tables)
        runs = (await connection.execute(text("SELECT count(*) FROM runs"))).scalar_one()
    for table in ("iterations", "context_sources"):  # on the columns 0003 has
        assert len(low[table]) == len(before[table]), table
        pairs = zip(before[table], low[table], strict=True)
        assert all(low_row == {k: row[k] for k in low_row} for row, low_row in pairs), table
    assert runs == 1
    up = rlm_bot("migrate", cwd=tmp_path, DATABASE_URL=database_url)
    assert up.stdout.endswith(f"migrated from 0003 to {head}.\n"), up.stderr
    async with engine.connect() as connection:
        after = await connection.run_sync(snapshot_tables)
    await engine.dispose()
    for table in low:
        assert len(after[table]) == len(before[table]), table


def test_migrate_to_an_unknown_revision_is_one_line(tmp_path, database_url):
    done = rlm_bot("migrate", "--to", "0999", cwd=tmp_path, DATABASE_URL=database_url)
    assert done.returncode == 2
    assert done.stderr.startswith("rlm-bot: there is no revision 0999; the revisions are 0001, ")
    assert done.stderr.count("\n") == 1
    base = rlm_bot("migrate", "--to", "base", cwd=tmp_path, DATABASE_URL=database_url)
    assert base.returncode == 2 and "would drop every table" in base.stderr
