"""`rlm-bot check` and `rlm-bot migrate`, and the start-up failures an operator meets: each is
one line naming what to fix, never a traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from bot_harness import harness_settings
from sqlalchemy import text

from bot.__main__ import StartupError, serve
from bot.ops.cli import EXIT_CHECK_FAILED, EXIT_OK, check
from bot.storage import Store
from bot.storage._engine import create_engine
from bot.storage._migrate import head_revision

ROOT = Path(__file__).resolve().parents[1]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _settings(slack, llm_server, database_url, **overrides):
    values = {"openai_base_url": llm_server.openai_base_url, "slack_api_url": slack.api_url}
    return harness_settings(database_url=database_url, **(values | overrides))


def rlm_bot(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_check_passes_with_one_line_per_check(slack, llm_server, database_url, capsys):
    assert await check(_settings(slack, llm_server, database_url)) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "ok   settings: HTTP mode on port 3000"
    assert lines[1].startswith("ok   database: ")
    assert "no database file yet" in lines[1] or "empty (no schema yet" in lines[1]
    assert lines[2] == "ok   slack: auth.test ok: team Test (T1), bot rlm"
    assert lines[3].startswith("ok   model openai:root-model: answered at http://127.0.0.1:")
    assert lines[4].startswith("ok   model openai:sub-model: answered at")
    assert lines[5].startswith("ok   sandbox: isolation: ")
    assert "memory: " in lines[5] and "processes: " in lines[5]
    assert len(lines) == 6
    assert llm_server.count("root") + llm_server.count("sub") == 2


async def test_check_reports_each_failure_and_exits_non_zero(
    slack, llm_server, database_url, capsys
):
    store = await Store.open(database_url)  # the database is fine and migrated
    await store.close()
    dead = f"http://127.0.0.1:{_closed_port()}/v1"
    settings = _settings(
        slack,
        llm_server,
        database_url,
        slack_bot_token="xoxb-revoked",
        rlm_sub_model="openai:other",
        openai_base_url=dead,
    )
    assert await check(settings) == EXIT_CHECK_FAILED
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("ok   database: ")
    assert lines[1].endswith(f"schema at {head_revision()} (newest)")
    assert lines[2].startswith("FAIL slack: auth.test refused SLACK_BOT_TOKEN (invalid_auth)")
    assert lines[3].startswith("FAIL model openai:root-model: ")
    assert lines[4].startswith("FAIL model openai:other: ")
    assert lines[5].startswith("ok   sandbox: ")
    assert all("\n" not in line and "Traceback" not in line for line in lines)


async def test_check_reports_a_database_that_is_not_there(slack, llm_server, capsys):
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{_closed_port()}/db"
    assert await check(_settings(slack, llm_server, url)) == EXIT_CHECK_FAILED
    [database] = [line for line in capsys.readouterr().out.splitlines() if "database" in line]
    assert database.startswith("FAIL database: The database at postgresql+asyncpg://")
    assert "connection refused" in database


def test_check_with_bad_settings_says_which(tmp_path):
    done = rlm_bot("check", cwd=tmp_path, SLACK_BOT_TOKEN="not-a-token")
    assert done.returncode == EXIT_CHECK_FAILED
    expected = "FAIL settings: SLACK_BOT_TOKEN must be a bot token starting with xoxb-.\n"
    assert done.stdout == expected


def test_migrate_creates_then_finds_nothing_to_do(tmp_path, database_url):
    first = rlm_bot("migrate", cwd=tmp_path, DATABASE_URL=database_url)
    assert first.returncode == 0, first.stderr
    assert first.stdout.endswith(f"migrated from an empty database to {head_revision()}.\n")
    again = rlm_bot("migrate", cwd=tmp_path, DATABASE_URL=database_url)
    assert again.stdout.endswith(f"is already at {head_revision()}; nothing to do.\n")
    assert "Traceback" not in first.stderr + again.stderr


def test_migrate_with_a_bad_url_is_one_line(tmp_path):
    done = rlm_bot("migrate", cwd=tmp_path, DATABASE_URL="rlm.db")
    assert done.returncode == 2
    assert done.stderr == (
        "rlm-bot: DATABASE_URL=rlm.db is not valid: must be a SQLAlchemy async URL such as "
        "sqlite+aiosqlite:///rlm.db.\n"
    )


async def test_a_database_from_a_newer_version_stops_the_start_with_one_line(
    slack, llm_server, database_url
):
    store = await Store.open(database_url)
    await store.close()
    engine = create_engine(database_url)
    async with engine.begin() as connection:
        await connection.execute(text("UPDATE alembic_version SET version_num = '0999'"))
    await engine.dispose()
    with pytest.raises(StartupError) as caught:
        await serve(_settings(slack, llm_server, database_url))
    message = str(caught.value)
    assert "\n" not in message and "0999" in message
    assert "run the rlm-slack version that migrated it, or restore a backup" in message
    assert slack.calls == []


async def test_a_bot_token_slack_refuses_stops_the_start_with_one_line(
    slack, llm_server, database_url
):
    settings = _settings(slack, llm_server, database_url, slack_bot_token="xoxb-revoked")
    with pytest.raises(StartupError) as caught:
        await serve(settings)
    assert str(caught.value) == (
        "Slack refused SLACK_BOT_TOKEN (invalid_auth): set it to the Bot User OAuth Token "
        "(OAuth & Permissions), reinstalling the app if it was revoked."
    )
    assert [c.method for c in slack.calls] == ["auth.test"]


async def test_a_slack_that_cannot_be_reached_stops_the_start_with_one_line(
    slack, llm_server, database_url
):
    api_url = f"http://127.0.0.1:{_closed_port()}/api/"
    settings = _settings(slack, llm_server, database_url, slack_api_url=api_url)
    with pytest.raises(StartupError) as caught:
        await serve(settings)
    assert str(caught.value).startswith(f"Slack could not be reached at {api_url} (")
    assert str(caught.value).endswith("check SLACK_API_URL and the network.")


def test_rlm_bot_against_a_database_server_that_is_not_there_is_one_line(tmp_path, slack):
    url = f"postgresql+asyncpg://postgres:pw-0451@127.0.0.1:{_closed_port()}/db"
    done = rlm_bot(
        cwd=tmp_path,
        SLACK_BOT_TOKEN="xoxb-test-token",
        SLACK_SIGNING_SECRET="s",
        SLACK_API_URL=slack.api_url,
        DATABASE_URL=url,
        OPENAI_API_KEY="k",
        PORT="0",
    )
    assert done.returncode == 2
    last = done.stderr.splitlines()[-1]
    assert "Traceback" not in done.stderr
    assert last.startswith("rlm-bot: The database at postgresql+asyncpg://postgres:***@")
    assert "connection refused" in last and "pw-0451" not in done.stderr
