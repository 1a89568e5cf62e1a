"""One identity per sandbox on a root host (issue 15, item 7): leased uids that no other
sandbox holds, not even one of another host with the same pid, that no running process has,
released when the session closes or its host dies; and one sandbox's fork bomb leaves another
sandbox's forks alone."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rlm.repl import REPLSession, SandboxLimits
from rlm.repl._identity import LEASE_DIRS, UID_BASE, UID_SPAN, lease_directory, lease_uid
from tests.security.attacks import ISOLATED, skip_unless_available

ROOT = Path(__file__).resolve().parents[2]
NOBODY = 65534


@pytest.fixture(autouse=True)
def _root_only() -> None:
    if os.geteuid() != 0:
        pytest.skip("UID LEASES NOT TESTED: only a root host leases uids (run the tests as root)")


# A host that believes it is PID 1 (as in its own container) and draws the same "random" uids
# as every other such host: the lease alone must keep them apart.
_HOST = r"""
import os, random, sys
os.getpid = lambda: 1
from rlm.repl import _identity
draw = random.Random(int(sys.argv[1]))
_identity._random_uid = lambda: _identity.UID_BASE + draw.randrange(_identity.UID_SPAN)
lease = _identity.lease_uid()
print(lease.uid, flush=True)
sys.stdin.read()  # hold it until told to go; exit without releasing: the kernel does that
"""


@pytest.fixture
def hosts() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for host in started:
        host.kill()
        host.wait(timeout=10)
        for stream in (host.stdin, host.stdout):
            if stream is not None:
                stream.close()


def _start_host(hosts: list[subprocess.Popen[str]], seed: int) -> tuple[subprocess.Popen[str], int]:
    host = subprocess.Popen(
        [sys.executable, "-c", _HOST, str(seed)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    hosts.append(host)
    assert host.stdout is not None
    line = host.stdout.readline()
    assert line.strip().isdigit(), f"the host printed {line!r}"
    return host, int(line)


def test_two_hosts_that_are_both_pid_1_and_draw_alike_get_distinct_uids(
    hosts: list[subprocess.Popen[str]],
) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    first, uid_a = _start_host(hosts, seed)
    second, uid_b = _start_host(hosts, seed)
    assert uid_a != uid_b
    import random

    draw = random.Random(seed)
    expected = [UID_BASE + draw.randrange(UID_SPAN) for _ in range(2)]
    assert [uid_a, uid_b] == expected, "the second host did not skip the held uid"
    assert all(UID_BASE <= uid < UID_BASE + UID_SPAN < 2**31 for uid in (uid_a, uid_b))
    # The first host dies without releasing: its lock goes with it, and the uid is free again.
    first.kill()
    first.wait(timeout=10)
    _, uid_c = _start_host(hosts, seed)
    assert uid_c == uid_a
    second.kill()
    second.wait(timeout=10)
    # What the dead hosts left is removed by the next host to open the directory.
    assert _leftover(uid_b) and not _held(uid_b)
    _, uid_d = _start_host(hosts, seed + 1)
    assert not _leftover(uid_b) and _leftover(uid_d) and _held(uid_d)


def _leftover(uid: int) -> bool:
    return any(os.path.exists(os.path.join(d, str(uid))) for d in LEASE_DIRS)


def test_a_uid_some_process_runs_as_is_never_leased() -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("UID IN USE NOT TESTED: setpriv (util-linux) is not installed")
    taken = UID_BASE + int.from_bytes(os.urandom(3), "big")
    sleeper = subprocess.Popen(
        ["setpriv", f"--reuid={taken}", f"--regid={taken}", "--clear-groups", "sleep", "60"]
    )
    try:
        deadline = time.monotonic() + 10
        while _uid_of(sleeper.pid) != taken:  # setpriv has dropped to it
            assert time.monotonic() < deadline, "the sleeper never became its uid"
            time.sleep(0.01)
        draws = iter([taken, taken + 1])
        lease = lease_uid(choose=lambda: next(draws))
        try:
            assert lease.uid == taken + 1
        finally:
            lease.release()
    finally:
        sleeper.kill()
        sleeper.wait()


def _uid_of(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
    return None


def test_the_lease_directory_must_be_roots_alone(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(OSError, match="no safe directory"):
        lease_directory((str(link),))  # a link, even to a good directory
    loose = tmp_path / "loose"
    loose.mkdir()
    loose.chmod(0o733)
    with pytest.raises(OSError, match="no safe directory"):
        lease_directory((str(loose),))
    foreign = tmp_path / "foreign"
    foreign.mkdir(mode=0o700)
    os.chown(foreign, NOBODY, NOBODY)
    with pytest.raises(OSError, match="no safe directory"):
        lease_directory((str(foreign),))
    fresh = tmp_path / "fresh"  # made by us: 0700, root's
    fd = lease_directory((str(fresh),))
    assert os.fstat(fd).st_uid == 0 and fresh.stat().st_mode & 0o777 == 0o700
    os.close(fd)


# -- sessions --------------------------------------------------------------------------------


def _held(uid: int) -> bool:
    """Whether some process holds the lease of `uid` (its file exists and is locked)."""
    for directory in LEASE_DIRS:
        try:
            fd = os.open(os.path.join(directory, str(uid)), os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
    return False


async def _nothing(*args: object) -> str:
    raise RuntimeError("no sub-calls here")


@pytest.mark.parametrize("method", ISOLATED)
async def test_a_session_holds_its_uid_until_it_closes(method: str) -> None:
    skip_unless_available(method)
    limits = SandboxLimits(isolation=method, require_isolation=True)
    repl = REPLSession("ctx", llm_query=_nothing, parallel_query=_nothing, limits=limits)  # type: ignore[arg-type]
    async with repl:
        result = await repl.run_cell("import os\nprint(os.getuid(), os.getgid())")
        uid, gid = map(int, result.output.split())
        assert uid == gid and UID_BASE <= uid < UID_BASE + UID_SPAN
        assert _held(uid)
        draws = iter([uid, uid + 1])  # drawn again while held: skipped
        other = lease_uid(choose=lambda: next(draws))
        assert other.uid == uid + 1
        other.release()
    assert not _held(uid)
    again = lease_uid(choose=lambda: uid)  # free once the session is closed
    assert again.uid == uid
    again.release()


# Fills this sandbox with sleeping children up to its process cap, then tells the host (by a
# sub-call) and holds them while the other sandbox forks.
_FILL = """
import os, time
children, failure = [], ''
while len(children) < 500:
    try:
        pid = os.fork()
    except OSError as exc:
        failure = exc.strerror
        break
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    children.append(pid)
llm_query('full')
print(len(children), failure)
"""
_FORK = """
import os, signal, time
children, failures = [], []
for _ in range(8):
    try:
        pid = os.fork()
    except OSError as exc:
        failures.append(exc.strerror)
        continue
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    children.append(pid)
for pid in children:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
print(len(children), failures)
"""


@pytest.mark.parametrize("method", ISOLATED)
async def test_one_sandboxs_fork_bomb_leaves_anothers_forks_alone(method: str) -> None:
    skip_unless_available(method)
    full, forked = asyncio.Event(), asyncio.Event()

    async def announce(prompt: str) -> str:
        full.set()
        await asyncio.wait_for(forked.wait(), 30)  # hold the children until the other forked
        return "ok"

    limits = SandboxLimits(isolation=method, require_isolation=True, processes=16)
    bomb = REPLSession("a", llm_query=announce, parallel_query=_nothing, limits=limits)  # type: ignore[arg-type]
    other = REPLSession("b", llm_query=_nothing, parallel_query=_nothing, limits=limits)  # type: ignore[arg-type]
    async with bomb, other:
        filling = asyncio.create_task(bomb.run_cell(_FILL))
        await asyncio.wait_for(full.wait(), 30)
        try:
            result = await other.run_cell(_FORK)
        finally:
            forked.set()
        filled = await filling
    count, _, failure = filled.output.strip().partition(" ")
    assert int(count) < 16 and failure == "Resource temporarily unavailable", filled.output
    assert result.output.strip() == "8 []", result.output
