"""Which sandbox limits hold, and what holds without cgroups (issue 15, item 10).

As root on this machine, cgroups bound the whole sandbox and the report says so. As an
unprivileged host (uid 65534, no writable cgroup): memory is bounded per process (RLIMIT_AS),
processes by RLIMIT_NPROC in each sandbox's own user namespace, so one sandbox's fork bomb
leaves another's forks alone; the report says exactly that, the app logs it, and with
RLM_REQUIRE_SANDBOX=true the app refuses to start with one line. `/rlm usage` shows it to
workspace admins only.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bot.ops.isolation import LIMITS, MEMORY_UNBOUNDED
from rlm.repl import SandboxLimits, sandbox_limits_report
from rlm.repl._cgroup import probe_cgroups
from tests.security.attacks import ISOLATED, skip_unless_available
from tests.security.test_host_layouts import (
    _PRIVATE_MOUNTS_SHELL,
    _SETUP_FAILED,
    UNPRIVILEGED_UID,
    UnprivilegedHost,
    _interpreter_home,
    unprivileged_host,
)
from tests.security.test_identity import _FILL, _FORK

__all__ = ["unprivileged_host"]  # the fixture, shared with test_host_layouts

ROOT = Path(__file__).resolve().parents[2]
RLM_BOT = str(Path(sys.executable).parent / "rlm-bot")
PROCESSES = 16
MEMORY_MB = 256


@pytest.mark.parametrize("method", ISOLATED)
def test_the_report_on_this_machine_names_what_holds(method: str) -> None:
    skip_unless_available(method)
    report = sandbox_limits_report(SandboxLimits(isolation=method, memory_mb=300, processes=20))
    support = probe_cgroups()
    assert report.isolation == method
    assert report.memory == ("sandbox" if support.memory else "process")
    assert report.memory_bounded == bool(support.memory)
    root = os.geteuid() == 0
    assert report.processes == ("sandbox" if support.pids else "uid" if root else "userns")
    text = report.text()
    assert f"isolation: {method}" in text and "oom_score_adj 1000" in text
    assert "300 MiB" in text and "20 " in text


def test_the_report_without_isolation_says_what_is_lost() -> None:
    report = sandbox_limits_report(SandboxLimits(isolation="none"))
    assert (report.isolation, report.memory, report.processes) == ("none", "process", "none")
    assert not report.memory_bounded and "NONE" in report.text()


# -- an unprivileged host: no cgroups ---------------------------------------------------------

# Two sessions: one fills its process cap and holds it while the other forks 8 children; then
# a cell tries to hold more memory than RLIMIT_AS allows; then the report and the app's own
# start-up check, as it would run with RLM_REQUIRE_SANDBOX false and true.
_HOST_SCRIPT = r"""
import asyncio, json, logging, sys
from bot.ops.isolation import SandboxUnavailable, check_sandbox, sandbox_limits
from rlm.repl import REPLSession, SandboxLimits, sandbox_limits_report
from rlm.repl._cgroup import probe_cgroups

method, processes, memory_mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fill, fork, big = json.loads(sys.stdin.read())
logs = []

class Keep(logging.Handler):
    def emit(self, record):
        logs.append(record.getMessage())

logging.getLogger("bot.sandbox").addHandler(Keep())
logging.getLogger("bot.sandbox").setLevel(logging.INFO)

async def nothing(*args):
    raise RuntimeError("no sub-calls")

async def main():
    full, forked = asyncio.Event(), asyncio.Event()

    async def announce(prompt):
        full.set()
        await asyncio.wait_for(forked.wait(), 30)
        return "ok"

    limits = SandboxLimits(
        isolation=method, require_isolation=True, processes=processes, memory_mb=memory_mb
    )
    report = {"cgroups": [probe_cgroups().memory, probe_cgroups().pids]}
    bomb = REPLSession("a", llm_query=announce, parallel_query=nothing, limits=limits)
    other = REPLSession("b", llm_query=nothing, parallel_query=nothing, limits=limits)
    async with bomb, other:
        filling = asyncio.create_task(bomb.run_cell(fill))
        await asyncio.wait_for(full.wait(), 30)
        try:
            report["fork"] = (await other.run_cell(fork)).output
        finally:
            forked.set()
        report["fill"] = (await filling).output
        report["big"] = (await other.run_cell(big)).output
    found = sandbox_limits_report(limits)
    report["report"] = [found.memory, found.processes, found.memory_bounded, found.text()]
    report["started"] = await check_sandbox(sandbox_limits(method, False))
    try:
        await check_sandbox(sandbox_limits(method, True))
        report["required"] = "started"
    except SandboxUnavailable as exc:
        report["required"] = str(exc)
    report["logs"] = logs
    print(json.dumps(report), flush=True)

asyncio.run(main())
"""

_BIG = f"""
try:
    block = bytearray({MEMORY_MB + 64} * 2**20)
    print('held', len(block))
except MemoryError:
    print('refused')
"""


def _as_unprivileged(host: UnprivilegedHost, command: list[str]) -> list[str]:
    keep = _interpreter_home()
    return [
        *("unshare", "--mount", "--propagation", "private", "--"),
        *("sh", "-c", _PRIVATE_MOUNTS_SHELL, "sh", keep, str(host.staging), str(UNPRIVILEGED_UID)),
        *command,
    ]


def _env(host: UnprivilegedHost, **extra: str) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(host.project),
        "PYTHONDONTWRITEBYTECODE": "1",
        **extra,
    }


@pytest.mark.parametrize("method", ISOLATED)
def test_without_cgroups_limits_hold_per_sandbox_and_the_report_says_which(
    unprivileged_host: UnprivilegedHost, method: str
) -> None:
    host = unprivileged_host
    command = [sys.executable, "-P", "-c", _HOST_SCRIPT, method, str(PROCESSES), str(MEMORY_MB)]
    done = subprocess.run(
        _as_unprivileged(host, command),
        input=json.dumps([_FILL, _FORK, _BIG]),
        cwd=host.project,
        env=_env(host),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if done.returncode == _SETUP_FAILED:
        pytest.skip(f"UNPRIVILEGED HOST NOT TESTED: {done.stderr.strip()[-500:]}")
    if "requires isolation" in done.stderr or "does not work" in done.stderr:
        pytest.skip(f"SANDBOX NOT TESTED with {method} as uid 65534: {done.stderr[-500:]}")
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    print(report)
    assert report["cgroups"] == [None, None], "the unprivileged host could make cgroups"
    count, _, failure = report["fill"].strip().partition(" ")
    assert int(count) < PROCESSES and failure == "Resource temporarily unavailable", report
    assert report["fork"].strip() == "8 []", report["fork"]  # the other sandbox is untouched
    assert report["big"].strip() == "refused", report["big"]  # RLIMIT_AS, per process
    memory, processes, bounded, text = report["report"]
    assert (memory, processes, bounded) == ("process", "userns", False)
    assert "per process only" in text and "own user namespace" in text
    assert report["started"] == method
    expected = f"REPL sandbox limits: isolation: {method}; memory: 4,096 MiB per process only"
    assert any(line.startswith(expected) for line in report["logs"]), report["logs"]
    refusal = report["required"]
    assert refusal.startswith(MEMORY_UNBOUNDED) and "\n" not in refusal, refusal
    assert refusal.endswith(f"(RLM_SANDBOX={method}, RLM_REQUIRE_SANDBOX=true).")


def test_the_app_refuses_to_start_without_a_memory_bound_when_a_sandbox_is_required(
    unprivileged_host: UnprivilegedHost,
) -> None:
    """The real `rlm-bot` as uid 65534 with RLM_REQUIRE_SANDBOX=true: one line, exit 2, and
    nothing opened (the database is never made)."""
    skip_unless_available("auto")
    host = unprivileged_host
    database = host.project / "rlm.db"
    env = _env(
        host,
        SLACK_BOT_TOKEN="xoxb-not-used",
        SLACK_SIGNING_SECRET="not-used",
        SLACK_API_URL="http://127.0.0.1:9/api/",  # never reached: the check comes first
        DATABASE_URL=f"sqlite+aiosqlite:///{database}",
        OPENAI_API_KEY="not-used",
        RLM_REQUIRE_SANDBOX="true",
    )
    done = subprocess.run(
        _as_unprivileged(host, [RLM_BOT]),
        cwd=host.project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode == _SETUP_FAILED:
        pytest.skip(f"UNPRIVILEGED HOST NOT TESTED: {done.stderr.strip()[-500:]}")
    assert done.returncode == 2, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("rlm-bot: ")]
    assert len(lines) == 1 and lines[0] == f"rlm-bot: {lines[0][len('rlm-bot: ') :]}"
    assert MEMORY_UNBOUNDED in lines[0] and "RLM_REQUIRE_SANDBOX=true" in lines[0], lines
    assert not database.exists()


# -- the app as root, with cgroups ------------------------------------------------------------


async def test_the_app_logs_the_limits_and_shows_them_to_admins_only(
    make_bot: Any, slack: Any, caplog: pytest.LogCaptureFixture
) -> None:
    skip_unless_available("auto")
    caplog.set_level(logging.INFO, logger="bot.sandbox")
    bot = await make_bot()
    [logged] = [r.getMessage() for r in caplog.records if r.name == "bot.sandbox.limits"]
    assert logged == LIMITS % sandbox_limits_report(SandboxLimits()).text()
    slack.users["U2"]["is_admin"] = True
    admin = (await bot.events.command("usage", user_id="U2")).json()["text"]
    anyone = (await bot.events.command("usage", user_id="U1")).json()["text"]
    assert "*REPL sandbox* (shown to admins)" in admin
    assert "• memory: 4,096 MiB" in admin and "• processes: " in admin
    assert "REPL sandbox" not in anyone and "oom_score_adj" not in anyone
