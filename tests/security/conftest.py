"""The host as an attacker finds it: secrets in its environment and its project directory."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from fake_llm import FakeLLMServer

from tests.security.attacks import SECRETS, Target, attack_target


@pytest.fixture
def target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, llm_server: FakeLLMServer
) -> Iterator[Target]:
    """The host's cwd holds `.env` and `rlm.db` with secrets; its env holds keys."""
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    monkeypatch.setenv("OPENAI_API_KEY", SECRETS[0])
    monkeypatch.setenv("SLACK_BOT_TOKEN", SECRETS[1])
    with attack_target(project, llm_server.port) as found:
        yield found
    assert not llm_server.requests, "the sandboxed code reached the LLM server"


PEAK_MEMORY_BOUND = 256 * 2**20  # what one attack may add to the host's resident memory


class Heartbeat:
    """A task on the host's event loop that notes how late each 10 ms tick runs, and the
    host's peak resident memory since the last reset."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._rss_at_reset = 0

    async def beat(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + 0.01
            await asyncio.sleep(0.01)
            self.worst = max(self.worst, loop.time() - due)

    def reset(self) -> None:
        self.worst = 0.0
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM, the peak, to the current resident size
        self._rss_at_reset = _status_kb("VmRSS") * 1024

    def peak_growth(self) -> int:
        return _status_kb("VmHWM") * 1024 - self._rss_at_reset


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise LookupError(field)


@pytest.fixture
async def heartbeat() -> AsyncIterator[Heartbeat]:
    """The heartbeat runs with the garbage collector paused: a full collection of the test
    process's heap (0.2-0.6 s late in a long run) is not the host's loop being blocked."""
    found = Heartbeat()
    collecting = gc.isenabled()
    gc.collect()
    gc.disable()
    task = asyncio.create_task(found.beat())
    try:
        yield found
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if collecting:
            gc.enable()
