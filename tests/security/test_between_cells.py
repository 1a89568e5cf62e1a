"""Between cells nothing in the sandbox runs, and no descriptor the worker holds reaches the
host's disk: both held by the host, whatever a cell changes inside the worker."""

from __future__ import annotations

import asyncio
import os

import pytest

from rlm.repl import REPLSession
from rlm.repl._cgroup import SandboxCgroup
from tests.security.attacks import ISOLATED, attack_session, skip_unless_available
from tests.security.host_attacks import _running

METHODS = [*ISOLATED, "none"]

# Every descriptor the cell holds, and (isolated) every one it can open again through /proc,
# is asked to reserve 1 GiB (fallocate, FALLOC_FL_KEEP_SIZE: the size stays, so RLIMIT_FSIZE
# never applies), to grow (ftruncate), and to take a byte 1 GiB in. Pipes are never written.
_RESERVE = r"""
import ctypes, os, stat
libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
GIB = 2 ** 30
reserved, tried = [], []
def attempt(fd, where):
    tried.append(where)
    if libc.fallocate(fd, 1, 0, GIB) == 0:
        reserved.append(('fallocate', where))
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        return
    if regular:
        try:
            os.ftruncate(fd, GIB)
            reserved.append(('ftruncate', where))
        except OSError:
            pass
        try:
            os.pwrite(fd, b'x', GIB)
            reserved.append(('write', where))
        except OSError:
            pass
for fd in sorted(int(f) for f in os.listdir('/proc/self/fd')):
    attempt(fd, f'fd {fd}')
if SCAN_ALL:
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            names = os.listdir(f'/proc/{pid}/fd')
        except OSError:
            continue
        for name in names:
            for flags in (os.O_RDWR, os.O_WRONLY):
                try:
                    fd = os.open(f'/proc/{pid}/fd/{name}', flags | os.O_NONBLOCK)
                except OSError:
                    continue
                try:
                    attempt(fd, f'/proc/{pid}/fd/{name}')
                finally:
                    os.close(fd)
print('RESERVED' if reserved else 'nothing reserved', reserved, tried)
"""


def _free_bytes(path: str) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


@pytest.mark.parametrize("method", METHODS)
async def test_no_descriptor_of_the_worker_can_reserve_host_disk(method: str) -> None:
    skip_unless_available(method)
    async with attack_session(method) as repl:
        assert repl._context_file is not None
        context = os.fstat(repl._context_file.fileno())
        free = _free_bytes(os.path.dirname(repl.workdir or "/tmp"))
        # Unisolated, the worker can open any file of the host's user: only its own fds count.
        code = f"SCAN_ALL = {method != 'none'}\n{_RESERVE}"
        result = await repl.run_cell(code)
        assert result.output.startswith("nothing reserved"), result.output[-2000:]
        assert "'fd 2'" in result.output  # stderr was among them
        after = os.fstat(repl._context_file.fileno())
        assert (after.st_blocks, after.st_size) == (context.st_blocks, context.st_size)
        # A reservation would take 1 GiB; other work on this machine moves far less meanwhile.
        assert free - _free_bytes(os.path.dirname(repl.workdir or "/tmp")) < 512 * 2**20


@pytest.mark.parametrize("method", METHODS)
async def test_stderr_is_a_drained_pipe_whose_tail_explains_a_crash(method: str) -> None:
    skip_unless_available(method)
    async with attack_session(method) as repl:
        result = await repl.run_cell(
            "import os, stat\nprint(stat.S_ISFIFO(os.fstat(2).st_mode))\n"
            "for _ in range(64):\n    os.write(2, b'x' * 2 ** 20)\n"  # 64 MB: past any file cap
            "os.write(2, b'\\nthe last words\\n')\nos._exit(7)"
        )
        assert result.worker_lost
        assert "exit code 7; the last words" in result.output, result.output
        assert (await repl.run_cell("print('alive')")).output == "alive\n"


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _sandbox_cpu(repl: REPLSession) -> float:
    assert repl.processes is not None
    return sum(_cpu_seconds(pid) for pid in repl.processes.keepers)


_SPIN = """
import threading, time
def spin():
    while True:
        pass
threading.Thread(target=spin, daemon=True).start()
kept = 41
time.sleep(0.3)
"""


@pytest.mark.parametrize("method", METHODS)
async def test_a_thread_burns_no_cpu_between_cells(method: str) -> None:
    skip_unless_available(method)
    async with attack_session(method) as repl:
        await repl.run_cell(_SPIN)
        before = _sandbox_cpu(repl)
        await asyncio.sleep(2.0)  # the host waits on the root model
        idle = _sandbox_cpu(repl) - before
        # The thread is alive and spins again once a cell runs: the test could see it burn.
        result = await repl.run_cell(
            "import threading, time\ntime.sleep(1.0)\nprint(threading.active_count(), kept + 1)"
        )
        busy = _sandbox_cpu(repl) - before - idle
    assert idle < 0.05, f"the sandbox used {idle:.2f} s of CPU between cells"
    assert result.output == "2 42\n"  # and the namespace is the same as before
    assert busy > 0.05, f"the spinning thread did not run in the next cell ({busy:.2f} s)"


# Daemons (a new session, a double fork, SIGTERM ignored), after the cell replaced what the
# worker once used to end them, and a thread that would start more later.
_OUTLIVE = """
import os, signal, subprocess, sys, threading, time
main = sys.modules['__main__']
for name in ('end_cell_processes', '_reap', '_descendants'):
    setattr(main, name, lambda *args, **kwargs: None)
os.kill = lambda *args: None
def sleeper(n):
    return [sys.executable, '-c', f'import time; time.sleep({n})']
subprocess.Popen(sleeper(4001), start_new_session=True)
if os.fork() == 0:
    if os.fork() == 0:
        os.setsid()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.execv(sys.executable, sleeper(4002))
    os._exit(0)
os.wait()
def later():
    time.sleep(1.0)
    subprocess.Popen(sleeper(4003), start_new_session=True)
threading.Thread(target=later, daemon=True).start()
print('started')
"""
# Python sleepers: the worker's filesystem holds the interpreter and no `sleep` binary.
_OUTLIVING = {f"time.sleep({n})\0".encode() for n in (4001, 4002, 4003)}


async def _nothing_outlives(repl: REPLSession) -> None:
    result = await repl.run_cell(_OUTLIVE)
    assert result.output == "started\n", result.output
    await asyncio.sleep(1.5)  # the thread would start its child by now, were it running
    assert not _running(_OUTLIVING), "processes outlived their cell"
    again = await repl.run_cell("import time\ntime.sleep(1.5)\nprint('next cell')")
    assert again.output == "next cell\n"
    # The thread ran on in the next cell and started its child; that cell's end took it.
    assert not _running(_OUTLIVING), "processes outlived the next cell"


@pytest.mark.parametrize("method", METHODS)
async def test_what_a_cell_started_is_gone_after_it(method: str) -> None:
    skip_unless_available(method)
    async with attack_session(method) as repl:
        await _nothing_outlives(repl)
        assert repl.processes is not None
        expected = "descendants" if method == "none" else ("cgroup" if repl.cgroup else "")
        assert repl.processes.how == (expected or "namespace")


@pytest.mark.parametrize("method", ISOLATED)
async def test_without_a_cgroup_the_pid_namespace_finds_them(
    method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host without cgroups (not root, or none delegated) is simulated by making none."""
    skip_unless_available(method)
    monkeypatch.setattr(SandboxCgroup, "create", classmethod(lambda cls, **kw: None))
    async with attack_session(method) as repl:
        assert repl.cgroup is None
        await _nothing_outlives(repl)
        assert repl.processes is not None and repl.processes.how == "namespace"
