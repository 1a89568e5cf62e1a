"""Per-sandbox cgroups on this machine's real cgroupfs: what the probe finds, that a wrapped
process and its children land inside, and that the process cap, the memory cap (tmpfs
included), kill and clean-up hold. A layer this machine lacks is skipped loudly, never passed."""

from __future__ import annotations

import errno
import logging
import os
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from rlm.repl import _cgroup
from rlm.repl._cgroup import SandboxCgroup, probe_cgroups, remove_stale_cgroups

MiB = 1024 * 1024
MakeCgroup = Callable[..., SandboxCgroup]
Start = Callable[[list[str]], "subprocess.Popen[str]"]


def require(layer: str) -> None:
    support = probe_cgroups()
    if not getattr(support, layer):
        reason = next((m for m in support.missing if m.startswith(layer)), layer)
        pytest.skip(f"CGROUP LAYER NOT TESTED: {reason}")


@pytest.fixture
def make_cgroup() -> Iterator[MakeCgroup]:
    """SandboxCgroup.create, each one removed afterwards and checked to be gone."""
    made: list[SandboxCgroup] = []

    def make(**limits: int) -> SandboxCgroup:
        cgroup = SandboxCgroup.create(**{"memory_bytes": 256 * MiB, "max_processes": 64, **limits})
        if cgroup is None:
            pytest.skip(f"CGROUP LAYER NOT TESTED: {'; '.join(probe_cgroups().missing)}")
        made.append(cgroup)
        return cgroup

    yield make
    for cgroup in made:
        cgroup.remove()
        assert not [d for d in cgroup.directories if os.path.exists(d)]


@pytest.fixture
def start() -> Iterator[Start]:
    """Popen with a text stdout pipe; every process started is killed and reaped afterwards."""
    started: list[subprocess.Popen[str]] = []

    def run(argv: list[str]) -> subprocess.Popen[str]:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        started.append(process)
        return process

    yield run
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        assert process.stdout is not None
        process.stdout.close()


def first_line(process: subprocess.Popen[str], timeout: float = 20) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, "the sandboxed process printed nothing"
    return process.stdout.readline()


def gone(pid: int) -> bool:
    """Exited: no longer in /proc, or a zombie waiting for its parent."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


def in_cgroup_lines(pid: int, cgroup: SandboxCgroup) -> int:
    """How many of the process's hierarchies place it in this sandbox's cgroup."""
    name = os.path.basename(cgroup.directories[0])
    with open(f"/proc/{pid}/cgroup") as lines:
        return sum(line.rstrip("\n").endswith("/" + name) for line in lines)


# -- what the probe finds --------------------------------------------------------------------


@pytest.mark.parametrize("layer", ["memory", "pids", "kill"])
def test_probe_finds_the_layer_in_our_own_cgroup(layer: str) -> None:
    require(layer)
    directory = getattr(probe_cgroups(), layer)
    # Sandbox cgroups go under the cgroup this very process is in, in that hierarchy.
    with open(os.path.join(directory, "cgroup.procs")) as procs:
        assert str(os.getpid()) in procs.read().split()
    assert not any(m.startswith(layer + ":") for m in probe_cgroups().missing)


def test_probe_runs_once_and_announces_what_it_found(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_cgroup, "_support", None)
    with caplog.at_level(logging.INFO, logger="rlm.sandbox"):
        first = probe_cgroups()
        assert probe_cgroups() is first
    announced = [r for r in caplog.records if r.getMessage().startswith("REPL sandbox cgroups")]
    found_any = any((first.memory, first.pids, first.cpu, first.kill))
    assert len(announced) == (1 if first.missing else 0) + (1 if found_any else 0)
    for reason in first.missing:
        assert reason.split(":")[0] in ("memory", "pids", "cpu", "kill")


def test_limits_are_written(make_cgroup: MakeCgroup) -> None:
    cgroup = make_cgroup(memory_bytes=64 * MiB, max_processes=9, cpu_weight=50)
    found: dict[str, str] = {}
    for directory in cgroup.directories:
        for file in ("memory.max", "memory.limit_in_bytes", "pids.max", "cpu.weight", "cpu.shares"):
            if os.path.exists(os.path.join(directory, file)):
                with open(os.path.join(directory, file)) as value:
                    found[file] = value.read().strip()
    support = probe_cgroups()
    if support.memory:
        assert str(64 * MiB) in (found.get("memory.max"), found.get("memory.limit_in_bytes"))
    if support.pids:
        assert found["pids.max"] == "9"
    if support.cpu:
        assert found.get("cpu.weight") == "50" or found.get("cpu.shares") == "512"


# -- who is inside ---------------------------------------------------------------------------


def test_wrapped_process_and_its_children_start_inside(
    make_cgroup: MakeCgroup, start: Start
) -> None:
    cgroup = make_cgroup()
    code = (
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(os.getpid(), child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    process = start(cgroup.wrap([sys.executable, "-c", code]))
    parent, child = map(int, first_line(process).split())
    assert parent == process.pid  # the wrapper exec'd the command: no process left outside
    for pid in (parent, child):
        assert pid in cgroup.current_processes()
        assert in_cgroup_lines(pid, cgroup) == len(cgroup.directories)
    assert in_cgroup_lines(os.getpid(), cgroup) == 0


def test_wrap_refuses_to_run_outside_a_removed_cgroup(make_cgroup: MakeCgroup) -> None:
    cgroup = make_cgroup()
    argv = cgroup.wrap(["/bin/echo", "ran"])
    assert not any(path in argv[2] for path in cgroup.procs_files)  # arguments, not code
    cgroup.remove()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    assert (done.returncode, done.stdout) == (125, "")


# -- limits ----------------------------------------------------------------------------------


def test_process_cap_stops_a_fork_loop(make_cgroup: MakeCgroup, start: Start) -> None:
    require("pids")
    cgroup = make_cgroup(max_processes=8)
    code = (
        "import os, time\n"
        "made = 0\n"
        "for _ in range(64):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError as exc:\n"
        "        print('refused', made, exc.errno, flush=True)\n"
        "        break\n"
        "    if pid == 0:\n"
        "        time.sleep(60)\n"
        "        os._exit(0)\n"
        "    made += 1\n"
        "else:\n"
        "    print('unbounded', made, 0, flush=True)\n"
        "time.sleep(60)\n"
    )
    process = start(cgroup.wrap([sys.executable, "-c", code]))
    outcome, made, error = first_line(process).split()
    assert (outcome, int(error)) == ("refused", errno.EAGAIN)
    assert 1 <= int(made) < 8  # the forking process itself is one of the eight
    assert len(cgroup.current_processes()) <= 8
    cgroup.kill()
    assert not cgroup.current_processes()


@pytest.mark.parametrize(("megabytes", "fits"), [(16, True), (200, False)])
def test_memory_cap_counts_tmpfs_pages(make_cgroup: MakeCgroup, megabytes: int, fits: bool) -> None:
    require("memory")
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("CGROUP LAYER NOT TESTED: memory over tmpfs needs root and unshare")
    cgroup = make_cgroup(memory_bytes=64 * MiB)
    # A tmpfs of its own in a private mount namespace: it goes away with the last process.
    fill = f"mount -t tmpfs none /mnt && dd if=/dev/zero of=/mnt/f bs=1M count={megabytes}"
    argv = cgroup.wrap(["unshare", "--mount", "--propagation", "private", "sh", "-c", fill])
    done = subprocess.run(argv, capture_output=True, timeout=60, check=False)
    assert (done.returncode == 0) is fits, done.stderr
    peak = _memory_peak(cgroup)
    assert peak <= 64 * MiB
    if fits:  # dd holds ~nothing itself: the 16 MiB charged are the tmpfs pages
        assert peak >= 16 * MiB


def _memory_peak(cgroup: SandboxCgroup) -> int:
    for directory in cgroup.directories:
        for file in ("memory.peak", "memory.max_usage_in_bytes"):
            if os.path.exists(os.path.join(directory, file)):
                with open(os.path.join(directory, file)) as peak:
                    return int(peak.read())
    raise AssertionError("no memory cgroup among " + ", ".join(cgroup.directories))


# -- kill and clean-up -----------------------------------------------------------------------


@pytest.fixture(params=["cgroup.kill", "cgroup.freeze", "v1 freezer.state"])
def killable(
    request: pytest.FixtureRequest, make_cgroup: MakeCgroup, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SandboxCgroup]:
    """A sandbox cgroup killed each way there is: the switch; freezing the v2 cgroup and
    signalling each process (a kernel without cgroup.kill); a v1 freezer (no usable v2)."""
    require("kill")
    if request.param == "v1 freezer.state":
        mounts, own = _cgroup._cgroup_mounts(), _cgroup._own_cgroups()
        parent, why = _cgroup._own_writable(mounts, own, "freezer")
        if parent is None:
            pytest.skip(f"CGROUP LAYER NOT TESTED: v1 freezer: {why}")
        cgroup = SandboxCgroup((f"{parent}/rlm-sandbox-{os.getpid()}-888888",))
        os.mkdir(cgroup.directories[0])
        try:
            yield cgroup
        finally:
            cgroup.remove()
        return
    if request.param == "cgroup.freeze":
        find = SandboxCgroup._find
        monkeypatch.setattr(
            SandboxCgroup, "_find", lambda self, f: None if f == "cgroup.kill" else find(self, f)
        )
    yield make_cgroup()


def test_kill_ends_the_tree_with_a_new_session_and_an_orphan(
    killable: SandboxCgroup, start: Start
) -> None:
    cgroup = killable
    code = (
        "import os, time\n"
        "def sleep():\n"
        "    time.sleep(60)\n"
        "    os._exit(0)\n"
        "leader = os.fork()\n"
        "if leader == 0:\n"
        "    os.setsid()\n"
        "    sleep()\n"
        "r, w = os.pipe()\n"
        "middle = os.fork()\n"
        "if middle == 0:\n"
        "    if os.fork() == 0:\n"
        "        os.write(w, str(os.getpid()).encode())\n"
        "        sleep()\n"
        "    os._exit(0)\n"
        "os.waitpid(middle, 0)\n"
        "os.close(w)\n"
        "print(os.getpid(), leader, int(os.read(r, 32)), flush=True)\n"
        "time.sleep(60)\n"
    )
    process = start(cgroup.wrap([sys.executable, "-c", code]))
    pids = [int(pid) for pid in first_line(process).split()]
    assert set(pids) <= cgroup.current_processes()
    began = time.monotonic()
    cgroup.kill()
    assert time.monotonic() - began < 5
    assert not cgroup.current_processes()
    assert process.wait(timeout=10) == -9
    deadline = time.monotonic() + 10  # init reaps the orphans in its own time
    while not all(gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(gone(pid) for pid in pids)


def test_remove_kills_and_leaves_no_directory(make_cgroup: MakeCgroup, start: Start) -> None:
    cgroup = make_cgroup()
    process = start(cgroup.wrap(["sleep", "60"]))
    deadline = time.monotonic() + 10
    while process.pid not in cgroup.current_processes() and time.monotonic() < deadline:
        time.sleep(0.01)
    cgroup.remove()
    assert process.wait(timeout=10) == -9
    assert not [d for d in cgroup.directories if os.path.exists(d)]
    cgroup.remove()  # twice is harmless


def test_remove_stale_cgroups_takes_only_those_of_dead_hosts(start: Start) -> None:
    support = probe_cgroups()
    parents = sorted({p for p in (support.memory, support.pids, support.cpu, support.kill) if p})
    if not parents:
        pytest.skip(f"CGROUP LAYER NOT TESTED: {'; '.join(support.missing)}")
    with open("/proc/sys/kernel/pid_max") as pid_max:
        dead_pid = int(pid_max.read()) + 123  # above pid_max: no process can have it
    assert not os.path.exists(f"/proc/{dead_pid}")
    dead = SandboxCgroup(tuple(f"{p}/rlm-sandbox-{dead_pid}-0" for p in parents))
    live = SandboxCgroup(tuple(f"{p}/rlm-sandbox-{os.getpid()}-999999" for p in parents))
    try:
        for directory in (*dead.directories, *live.directories):
            os.mkdir(directory)
        left_running = start(dead.wrap(["sleep", "60"]))
        deadline = time.monotonic() + 10
        while left_running.pid not in dead.current_processes() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert remove_stale_cgroups() >= len(parents)
        assert left_running.wait(timeout=10) == -9
        assert not [d for d in dead.directories if os.path.exists(d)]
        assert all(os.path.isdir(d) for d in live.directories)
    finally:
        dead.remove()
        live.remove()
