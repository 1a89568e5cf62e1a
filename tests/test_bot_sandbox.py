"""The REPL sandbox chosen from RLM_SANDBOX / RLM_REQUIRE_SANDBOX, proved and logged at start."""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from bot_harness import harness_settings

from bot.app import start_services
from bot.ops.isolation import SandboxUnavailable, sandbox_limits
from rlm.repl import REPLSession
from tests.security.attacks import skip_unless_available


@pytest.fixture
def no_sandbox_tools(tmp_path, monkeypatch):
    """A PATH on which neither bwrap nor unshare can be found."""
    empty = tmp_path / "no-tools"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


async def test_the_method_in_use_is_logged_at_start(make_bot, caplog):
    skip_unless_available("auto")
    caplog.set_level(logging.INFO, logger="bot.sandbox")
    bot = await make_bot()
    assert bot.services.isolation in ("bwrap", "unshare")
    [record] = [r for r in caplog.records if r.name == "bot.sandbox"]
    assert record.levelno == logging.INFO
    assert record.getMessage() == (
        f"REPL sandbox: generated code runs isolated with {bot.services.isolation} "
        "(RLM_SANDBOX=auto)."
    )


async def test_without_isolation_the_app_starts_and_warns_loudly(
    make_bot, slack, llm_server, caplog, no_sandbox_tools
):
    caplog.set_level(logging.INFO, logger="bot.sandbox")
    bot = await make_bot()
    assert bot.services.isolation == "none"
    [record] = [r for r in caplog.records if r.name == "bot.sandbox"]
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith("REPL sandbox: NONE. Generated code runs without")
    assert "RLM_REQUIRE_SANDBOX=true" in record.getMessage()
    slack.add_message("C1", "something to read", user="U2")
    await bot.events.command("ask anything?")
    await bot.settle()
    assert [r.status for r in await bot.store.list_runs()] == ["finished"]


@pytest.mark.parametrize(
    ("choice", "required", "expected"),
    [
        ("auto", True, "The REPL sandbox requires isolation but no method works"),
        ("bwrap", False, "The REPL sandbox was asked to isolate with bwrap but it does not work"),
        ("unshare", True, "The REPL sandbox was asked to isolate with unshare but it does not"),
    ],
)
async def test_a_sandbox_that_cannot_work_as_configured_stops_the_start(
    slack, llm_server, tmp_path, no_sandbox_tools, choice, required, expected
):
    settings = harness_settings(
        slack_api_url=slack.api_url,
        openai_base_url=llm_server.openai_base_url,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'rlm.db'}",
        rlm_sandbox=choice,
        rlm_require_sandbox=required,
    )
    with pytest.raises(SandboxUnavailable) as caught:
        await start_services(settings)
    message = str(caught.value)
    assert message.startswith(expected) and "\n" not in message
    assert f"(RLM_SANDBOX={choice}, RLM_REQUIRE_SANDBOX={str(required).lower()})." in message
    assert not (tmp_path / "rlm.db").exists()


@pytest.mark.parametrize("method", ["bwrap", "unshare"])
async def test_the_database_stays_hidden_where_the_worker_could_otherwise_see_it(method):
    """A SQLite file kept inside the venv, which the worker no longer sees at all."""
    skip_unless_available(method)
    folder = Path(tempfile.mkdtemp(prefix="rlm-data-", dir=sys.prefix))
    try:
        (folder / "app.sqlite-data").write_text("db-secret-inside-prefix")
        limits = sandbox_limits(method, True, database_url=f"sqlite+aiosqlite:///{folder}/x.db")
        assert limits.private_paths == (str(folder / "x.db"),)

        async def nothing(*args):
            return ""

        session = REPLSession("ctx", llm_query=nothing, parallel_query=nothing, limits=limits)
        async with session:
            listing = await session.run_cell(f"import os\nprint(os.listdir({str(folder)!r}))")
        # Not on the worker's allowlist: the directory does not exist for it at all.
        assert listing.output.endswith(
            f"FileNotFoundError: [Errno 2] No such file or directory: {str(folder)!r}\n"
        )
    finally:
        shutil.rmtree(folder)
