"""The app as an operator installs it: a wheel built from the sources, installed into a fresh
venv, started from an empty directory. Its migrations travel inside the package.

Nothing is downloaded: the wheel is built with the build backend of the venv running these
tests, and the fresh venv borrows that venv's dependencies through a .pth file written after
the install (so pip never sees this checkout's own editable copy).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from bot_harness import SlackEvents
from test_bot_restart import bot_env

from bot.slack import messages
from bot.storage._migrate import head_revision

ROOT = Path(__file__).resolve().parents[1]


def _run(argv: list[str], **kw) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, **kw)
    assert done.returncode == 0, f"{' '.join(argv[:5])} failed:\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the project's wheel installed; returns its bin directory."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("rlm", "bot", "migrations"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    pip = [sys.executable, "-m", "pip", "--isolated", "--disable-pip-version-check", "--quiet"]
    dist = base / "dist"
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(dist),
          str(source)])  # fmt: skip
    (wheel,) = dist.glob("rlm_slack-*.whl")
    venv = base / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    _run([base_python, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    _run([*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)])
    (site_packages,) = (venv / "lib").glob("python*/site-packages")
    (site_packages / "_rlm_borrowed_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    shutil.rmtree(source)  # the installed copy must stand on its own
    return venv / "bin"


def test_the_wheel_carries_the_package_and_its_migrations(installed):
    where = _run(
        [str(installed / "python"), "-c", "import bot, rlm; print(bot.__file__, rlm.__file__)"],
        cwd="/",
    ).stdout.split()
    assert all(p.startswith(str(installed.parent)) for p in where), where
    migrations = Path(where[0]).parent / "migrations"
    assert (migrations / "env.py").is_file() and (migrations / "script.py.mako").is_file()
    assert sorted(p.name for p in (migrations / "versions").glob("0*.py"))[:2] == [
        "0001_initial.py",
        "0002_postgres_ready_and_retention.py",
    ]


@pytest.mark.parametrize(
    ("url", "dialect_words"),
    [
        (None, ("CREATE TABLE runs", "CREATE TABLE alembic_version")),
        ("postgresql+asyncpg://someone@127.0.0.1:1/db", ("BIGINT", "CREATE TABLE runs")),
    ],
    ids=["sqlite", "postgresql"],
)
def test_migrate_sql_prints_the_ddl_without_connecting(installed, tmp_path, url, dialect_words):
    env = {"PATH": "/usr/bin:/bin"} | ({"DATABASE_URL": url} if url else {})
    # A SQLite file not there yet reads as empty; a server is not asked when told where from.
    start = ["--from", "base"] if url else []
    done = _run([str(installed / "rlm-bot"), "migrate", "--sql", *start], cwd=tmp_path, env=env)
    for words in dialect_words:
        assert words in done.stdout
    assert f"UPDATE alembic_version SET version_num='{head_revision()}'" in done.stdout
    assert list(tmp_path.iterdir()) == []  # no database file made


async def test_rlm_bot_from_the_wheel_starts_in_an_empty_directory_migrates_and_serves(
    installed, tmp_path, slack, llm_server, database_url
):
    empty = tmp_path / "empty"
    empty.mkdir()
    env = bot_env(slack, llm_server, database_url)
    process = await asyncio.create_subprocess_exec(
        str(installed / "rlm-bot"), cwd=empty, env=env, stderr=asyncio.subprocess.PIPE
    )
    log: list[str] = []
    try:
        assert process.stderr is not None
        async with asyncio.timeout(60):
            while not (found := re.search(r"listening on port (\d+)", "".join(log))):
                line = (await process.stderr.readline()).decode()
                assert line, "rlm-bot exited:\n" + "".join(log)
                log.append(line)
        events = SlackEvents(f"http://127.0.0.1:{found.group(1)}/slack/events")
        try:
            reply = await events.command("help")
        finally:
            await events.close()
        assert reply.status == 200 and reply.json()["text"] == messages.USAGE
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            rest = await process.stderr.read()
            assert await process.wait() == 0, "".join(log) + rest.decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert "Traceback" not in "".join(log)
    assert list(empty.iterdir()) == []  # nothing written where it was started

    check = await asyncio.create_subprocess_exec(
        str(installed / "rlm-bot"), "check", cwd=empty, env=env, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(check.communicate(), 120)
    lines = out.decode().splitlines()
    assert check.returncode == 0, lines
    assert [line.split(":")[0] for line in lines] == [
        "ok   settings",
        "ok   database",
        "ok   slack",
        "ok   model openai",
        "ok   model openai",
        "ok   sandbox",
    ]
    assert f"schema at {head_revision()} (newest)" in lines[1]
