"""The worker dies first (issue 15, item 8): everything in a sandbox is the OOM killer's first
choice and cannot make itself less so, and a host in a memory-limited cgroup survives a cell
that spreads its memory over child processes, then runs the next cell."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rlm.repl import REPLSession, SandboxLimits
from rlm.repl._cgroup import probe_cgroups
from tests.security.attacks import ISOLATED, skip_unless_available

ROOT = Path(__file__).resolve().parents[2]
MiB = 2**20


async def _nothing(*args: object) -> str:
    raise RuntimeError("no sub-calls here")


_ADJ = """
import os
def adj():
    with open('/proc/self/oom_score_adj') as f:
        return int(f.read())
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.write(w, str(adj()).encode())
    os._exit(0)
os.waitpid(pid, 0)
child = int(os.read(r, 16))
try:
    with open('/proc/self/oom_score_adj', 'w') as f:
        f.write('0')
    lowered = 'lowered to %d' % adj()
except OSError as exc:
    lowered = 'refused: ' + exc.strerror
print(adj(), child, lowered)
"""


@pytest.mark.parametrize("method", ISOLATED)
async def test_everything_in_a_sandbox_is_the_oom_killers_first_choice(method: str) -> None:
    skip_unless_available(method)
    limits = SandboxLimits(isolation=method, require_isolation=True)
    repl = REPLSession("ctx", llm_query=_nothing, parallel_query=_nothing, limits=limits)  # type: ignore[arg-type]
    async with repl:
        result = await repl.run_cell(_ADJ)
    worker, child, lowered = result.output.strip().split(" ", 2)
    assert (worker, child) == ("1000", "1000"), result.output
    if os.geteuid() == 0:  # a root host's value is also the floor no process below can cross
        assert lowered.startswith("refused:"), result.output
    assert _own_adj() != 1000  # the host's own is left as it was


def _own_adj() -> int:
    return int(Path("/proc/self/oom_score_adj").read_text())


# -- a host in a memory-limited cgroup -------------------------------------------------------

HOST_LIMIT = 600 * MiB
HOST_HEAP = 300 * MiB  # what the host itself holds, as a bot's caches and buffers would
SANDBOX_MB = 512

# The host: enters nothing itself (the shell before it did), holds HOST_HEAP, and runs the
# attack cell and then one more cell in one session; reports as JSON on stdout.
_HOST_SCRIPT = r"""
import asyncio, json, sys
from rlm.repl import REPLSession, SandboxLimits

heap = bytearray(int(sys.argv[2]))
for i in range(0, len(heap), 4096):
    heap[i] = 1

async def nothing(*args):
    raise RuntimeError("no sub-calls")

async def main():
    method, memory_mb = sys.argv[1], int(sys.argv[3])
    limits = SandboxLimits(isolation=method, require_isolation=True, memory_mb=memory_mb)
    report = {}
    async with REPLSession("ctx", llm_query=nothing, parallel_query=nothing, limits=limits) as repl:
        report["sandbox_memory_limit"] = repl.cgroup.memory_limit if repl.cgroup else None
        spread = await repl.run_cell(sys.stdin.read())
        report["spread"] = [spread.output, spread.error, spread.worker_lost]
        after = await repl.run_cell("print('still here')")
        report["after"] = [after.output, after.error]
    print(json.dumps(report), flush=True)

asyncio.run(main())
"""

# 8 children of 45 MiB each, every page touched; each says "ok" once it holds its share;
# the cell reports how many hold theirs at the same time.
_SPREAD = """
import os, signal, time
children = {}
for _ in range(8):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        block = bytearray(45 * 2**20)
        for i in range(0, len(block), 4096):
            block[i] = 1
        os.write(w, b'ok')
        time.sleep(60)
        os._exit(0)
    os.close(w)
    children[pid] = r
for pid, r in children.items():
    os.read(r, 2)  # "ok", or empty: the child died first
# A child may hold its share and be killed later, when a sibling's pages push the sandbox
# over its limit: count those still alive once all have had their turn.
time.sleep(0.2)
alive = [pid for pid in children if os.waitpid(pid, os.WNOHANG) == (0, 0)]
for pid in alive:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
print(len(alive), 'children held their share')
"""


@pytest.fixture
def host_cgroup() -> Iterator[Path]:
    """A memory cgroup of HOST_LIMIT under ours, removed (with whatever is left in it) after."""
    if os.geteuid() != 0:
        pytest.skip("OOM HOST NOT TESTED: making a memory cgroup for the host needs root")
    parent = probe_cgroups().memory
    if parent is None:
        pytest.skip("OOM HOST NOT TESTED: no writable memory cgroup on this machine")
    directory = Path(parent, f"rlm-test-host-{os.getpid()}")
    directory.mkdir()
    try:
        v2 = (directory / "cgroup.controllers").exists()
        limits = {"memory.max": HOST_LIMIT, "memory.swap.max": 0} if v2 else {}
        limits = limits or {"memory.limit_in_bytes": HOST_LIMIT}
        for name, value in limits.items():
            if (directory / name).exists():
                (directory / name).write_text(str(value))
        yield directory
    finally:
        _remove_tree(directory)


def _remove_tree(directory: Path) -> None:
    for inner in sorted(directory.rglob("*"), key=lambda p: -len(p.parts)):
        if inner.is_dir():
            _kill_and_remove(inner)
    _kill_and_remove(directory)


def _kill_and_remove(directory: Path) -> None:
    for _ in range(100):
        pids = (directory / "cgroup.procs").read_text().split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            directory.rmdir()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"could not remove {directory}")


@pytest.mark.parametrize("method", ISOLATED)
def test_a_host_in_a_memory_limited_cgroup_outlives_the_sandbox(
    host_cgroup: Path, method: str
) -> None:
    skip_unless_available(method)
    enter = 'echo $$ > "$1/cgroup.procs" || exit 97; shift; exec "$@"'
    argv = ["sh", "-c", enter, "sh", str(host_cgroup)]
    argv += [sys.executable, "-c", _HOST_SCRIPT, method, str(HOST_HEAP), str(SANDBOX_MB)]
    done = subprocess.run(
        argv,
        input=_SPREAD,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, f"the host died ({done.returncode}): {done.stderr[-2000:]}"
    report = json.loads(done.stdout.strip().splitlines()[-1])
    print(report)
    limit = report["sandbox_memory_limit"]
    assert limit is None or limit <= HOST_LIMIT - HOST_HEAP, "asked more than the host has left"
    output, _, worker_lost = report["spread"]
    # The sandbox lost: the worker was replaced, or some children were killed before holding.
    held = re.match(r"(\d) children held their share", output)
    assert worker_lost or (held is not None and int(held.group(1)) < 8), output
    assert report["after"] == ["still here\n", False]
