"""SQLite on a full disk (a small tmpfs this test mounts, as root): a question that cannot
be stored is told so once, in the slash command's acknowledgement or in the mention's
thread, and nothing is echoed publicly."""

from __future__ import annotations

import contextlib
import os
import subprocess

import pytest
from bot_harness import BotHarness, harness_settings, mention

from bot.slack import messages


@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("SKIPPED LOUDLY: mounting a small tmpfs for a full disk needs root")
    where = tmp_path / "disk"
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"SKIPPED LOUDLY: cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(where) -> None:
    with contextlib.suppress(OSError), open(where / "filler", "wb") as out:
        while True:
            out.write(b"\0" * 65536)
            out.flush()
            os.fsync(out.fileno())


async def test_a_full_disk_tells_the_asker_once_and_echoes_nothing(slack, llm_server, small_disk):
    bot = await BotHarness(
        harness_settings(
            slack_api_url=slack.api_url,
            openai_base_url=llm_server.openai_base_url,
            database_url=f"sqlite+aiosqlite:///{small_disk / 'rlm.db'}",
        ),
        response_base=slack.url,
    ).start()
    try:
        slack.add_message("C1", "something to read", user="U2")
        fill(small_disk)
        reply = await bot.events.command("ask anything?")
        assert reply.status == 200
        assert reply.json() == {"text": messages.NOT_TAKEN, "response_type": "ephemeral"}
        ts = slack.next_ts()
        answered = await bot.events.event(mention("C1", "<@UBOT> and this?", ts))
        assert answered.status == 200
        await bot.settle(20)
        assert slack.posts("C1", thread_ts=ts) == [messages.NOT_TAKEN]
        assert [p for p in slack.posts("C1") if "asked" in p] == []  # no echo
        assert llm_server.count("any") == 0
    finally:
        await bot.close()
