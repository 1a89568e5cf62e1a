"""How the sandbox is chosen, reported and set up: probing, logging, refusals, limits, fds,
uids, and workers that never outlive their host."""

from __future__ import annotations

import ast
import asyncio
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from rlm import REPLError
from rlm._exceptions import ConfigurationError
from rlm.repl import REPLSession, SandboxLimits, _sandbox
from rlm.repl._cgroup import remove_stale_cgroups
from tests.security.attacks import ISOLATED, attack_session, skip_unless_available

ROOT = Path(__file__).resolve().parents[2]


async def _no_subcalls(*args: object) -> str:
    raise RuntimeError("no sub-calls here")


def session(**limits: object) -> REPLSession:
    return REPLSession(
        "ctx",
        llm_query=_no_subcalls,
        parallel_query=_no_subcalls,  # type: ignore[arg-type]
        limits=SandboxLimits(**limits),  # type: ignore[arg-type]
    )


@pytest.fixture
def no_wrappers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine without bwrap or unshare: nothing on PATH, nothing announced yet."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(_sandbox, "_announced", set())


# -- choosing and reporting ------------------------------------------------------------------


async def test_auto_picks_the_first_working_method_and_logs_it_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    skip_unless_available("auto")
    monkeypatch.setattr(_sandbox, "_announced", set())
    expected = next(m for m in ISOLATED if not _sandbox.probe(m))
    with caplog.at_level(logging.INFO, logger="rlm.sandbox"):
        for _ in range(2):
            async with session() as repl:
                assert repl.isolation == expected
    chosen = [r for r in caplog.records if "isolating workers" in r.getMessage()]
    assert len(chosen) == 1 and chosen[0].levelno == logging.INFO
    assert expected in chosen[0].getMessage()


def test_probe_runs_the_wrapper_once_and_caches_the_answer() -> None:
    skip_unless_available("auto")
    method = next(m for m in ISOLATED if not _sandbox.probe(m))
    started = time.perf_counter()
    assert _sandbox.probe(method) == ""
    assert time.perf_counter() - started < 0.01  # no second run of the wrapper


@pytest.mark.usefixtures("no_wrappers")
async def test_required_isolation_that_is_unavailable_refuses_in_one_sentence() -> None:
    with pytest.raises(REPLError) as caught:
        async with session(require_isolation=True):
            pass
    message = str(caught.value)
    assert "requires isolation" in message and "bwrap is not installed" in message
    assert message.endswith(".") and message.count(". ") == 0


@pytest.mark.usefixtures("no_wrappers")
@pytest.mark.parametrize("method", ISOLATED)
async def test_an_explicit_method_that_is_missing_refuses(method: str) -> None:
    with pytest.raises(REPLError, match=f"asked to isolate with {method}"):
        async with session(isolation=method):
            pass


@pytest.mark.usefixtures("no_wrappers")
async def test_auto_without_any_method_warns_loudly_and_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="rlm.sandbox"):
        async with session() as repl:
            assert repl.isolation == "none"
            assert (await repl.run_cell("print(context)")).output == "ctx\n"
    warning = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) == 1 and "NO ISOLATION" in warning[0].getMessage()


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"isolation": "docker"}, "isolation must be one of"),
        ({"isolation": "none", "require_isolation": True}, "contradicts"),
    ],
)
def test_bad_isolation_settings_are_refused(limits: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        SandboxLimits(**limits)  # type: ignore[arg-type]


# -- inside the worker -------------------------------------------------------------------------


@pytest.mark.parametrize("method", [*ISOLATED, "none"])
async def test_worker_holds_only_its_pipes_and_its_limits(method: str) -> None:
    skip_unless_available(method)
    async with attack_session(method) as repl:
        result = await repl.run_cell(
            "import os, resource\n"
            "fds = {}\n"
            "for fd in os.listdir('/proc/self/fd'):\n"
            "    try:\n"
            "        fds[int(fd)] = os.readlink('/proc/self/fd/' + fd)\n"
            "    except OSError:\n"
            "        pass  # the directory listing's own descriptor, closed by now\n"
            "print(sorted(set(fds.values())))\n"
            "names = ('AS', 'FSIZE', 'NOFILE', 'CPU', 'NPROC', 'CORE')\n"
            "print([resource.getrlimit(getattr(resource, 'RLIMIT_' + n))[0] for n in names])"
        )
    fds_line, limits_line = result.output.splitlines()
    targets = ast.literal_eval(fds_line)
    # Pipes and /dev/null only: the context's file is closed by now, stderr is a pipe.
    assert [f for f in targets if not f.startswith("pipe:") and f != "/dev/null"] == [], targets
    assert sum(f.startswith("pipe:") for f in targets) == 3  # the protocol and stderr
    # Unisolated, RLIMIT_NPROC would count every process of the host's user: left alone.
    nproc = 32 if method != "none" else resource.getrlimit(resource.RLIMIT_NPROC)[0]
    assert ast.literal_eval(limits_line) == [512 * 2**20, 8 * 2**20, 256, 600, nproc, 0]


@pytest.mark.parametrize("method", ISOLATED)
async def test_worker_runs_unprivileged_with_its_own_uid(method: str) -> None:
    skip_unless_available(method)
    async with attack_session(method) as one, attack_session(method) as two:
        code = "import os\nprint(os.getuid())"
        uids = [(await s.run_cell(code)).output for s in (one, two)]
    if os.geteuid() == 0:
        assert "0\n" not in uids and uids[0] != uids[1]  # each session its own budget


@pytest.mark.parametrize("method", ISOLATED)
async def test_a_fork_bomb_in_one_session_leaves_another_able_to_fork(method: str) -> None:
    skip_unless_available(method)
    hoard = (
        "import os, signal\nkids = 0\n"
        "for _ in range(128):\n"
        "    try:\n        pid = os.fork()\n    except OSError:\n        break\n"
        "    if pid == 0:\n        signal.pause()\n        os._exit(0)\n"
        "    kids += 1\nprint(kids)"
    )
    fork_one = (
        "import os\npid = os.fork()\nif pid == 0:\n    os._exit(0)\nprint(os.waitpid(pid, 0)[1])"
    )
    async with attack_session(method) as bomb, attack_session(method) as other:
        held = int((await bomb.run_cell(hoard)).output)  # children stay alive
        assert held < 32
        assert (await other.run_cell(fork_one)).output == "0\n"


@pytest.mark.parametrize("method", ISOLATED)
async def test_cpu_limit_stops_a_worker_that_spins(method: str) -> None:
    skip_unless_available(method)
    limits = SandboxLimits(cpu_seconds=1, isolation=method)
    repl = REPLSession(
        "ctx",
        llm_query=_no_subcalls,
        parallel_query=_no_subcalls,  # type: ignore[arg-type]
        cell_timeout=10,  # fails in 10 s, not 60, if the limit does not hold
        limits=limits,
    )
    async with repl:
        result = await repl.run_cell("while True:\n    pass")
        assert result.worker_lost and "SIGXCPU" in result.output
        assert (await repl.run_cell("print(context)")).output == "ctx\n"


# -- the host's death ------------------------------------------------------------------------

_HOST_SCRIPT = """
import asyncio, sys
from rlm.repl import REPLSession, SandboxLimits

async def main():
    async def nothing(*a):
        return ""
    repl = REPLSession("ctx", llm_query=nothing, parallel_query=nothing,
                       limits=SandboxLimits(isolation=sys.argv[1]))
    await repl.start()
    await repl.run_cell("import subprocess, sys\\n"
                        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])")
    print("READY", repl.workdir, flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def host_child(pid: int) -> int:
    (child,) = [p for p in _descendants(pid) if _parent(p) == pid]
    return child


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("method", [*ISOLATED, "none"])
def test_a_killed_host_leaves_no_worker_behind(method: str) -> None:
    skip_unless_available(method)
    host = subprocess.Popen(
        [sys.executable, "-c", _HOST_SCRIPT, method], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert host.stdout is not None
        ready, workdir = host.stdout.readline().split()
        assert ready == "READY"
        # The wrapper and the worker (a cell's own sleeper ends with the cell).
        everything = _descendants(host.pid)
        assert len(everything) >= (1 if method == "none" else 2)
        # Unisolated, PR_SET_PDEATHSIG holds the worker only: the code's own children are
        # not in a PID namespace that dies with it.
        watched = everything if method != "none" else {host_child(host.pid)}
    finally:
        host.send_signal(signal.SIGKILL)
        host.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(p) for p in watched):
        time.sleep(0.05)
    survivors = [p for p in everything if _alive(p)]
    for pid in survivors:  # clean up before asserting
        os.kill(pid, signal.SIGKILL)
    shutil.rmtree(workdir)  # the killed host could not
    remove_stale_cgroups()  # nor remove its sandbox's cgroup
    assert not [p for p in survivors if p in watched]


@pytest.mark.parametrize("method", ISOLATED)
async def test_host_directory_stays_hidden_inside_a_path_the_worker_sees(
    method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An app run from inside the interpreter's tree (a venv, /usr/src/app): absent."""
    skip_unless_available(method)
    project = Path(tempfile.mkdtemp(prefix="rlm-project-", dir=sys.prefix))
    try:
        (project / ".env").write_text("SLACK_BOT_TOKEN=xoxb-inside-prefix\n")
        monkeypatch.chdir(project)
        async with attack_session(method) as repl:
            listing = await repl.run_cell(f"import os\nprint(os.listdir({str(project)!r}))")
            stdlib = await repl.run_cell("import decimal, sqlite3\nprint('imports work')")
        # Not on the worker's allowlist: the directory does not exist for it at all.
        assert listing.output.endswith(
            f"FileNotFoundError: [Errno 2] No such file or directory: {str(project)!r}\n"
        )
        assert stdlib.output == "imports work\n"
    finally:
        shutil.rmtree(project)


# -- leftovers -------------------------------------------------------------------------------


def test_directories_of_dead_hosts_are_removed_and_links_never_followed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rlm.repl import _files

    top = Path(tempfile.mkdtemp(prefix="rlm-stale-test-"))
    try:
        monkeypatch.setattr(tempfile, "tempdir", str(top))
        monkeypatch.setattr(_files, "_stale_checked", False)
        dead = 2**22 + 7  # above any pid_max: no such process
        assert not Path(f"/proc/{dead}").exists()
        crashed = top / f"rlm-repl-{dead}-abc123"
        crashed.mkdir()
        (crashed / "context.json").write_text('["slack history"]')
        legacy = top / "rlm-repl-k2j4h5g6"  # the unnamed kind earlier versions left
        legacy.mkdir()
        alive = top / f"rlm-repl-{os.getpid()}-live"
        alive.mkdir()
        precious = top / "precious"
        precious.mkdir()
        (precious / "keep.txt").write_text("keep")
        (top / f"rlm-repl-{dead}-link").symlink_to(precious)
        _files.remove_stale_workdirs()
        assert not crashed.exists() and not legacy.exists()
        assert alive.exists() and (precious / "keep.txt").read_text() == "keep"
        _files.remove_stale_workdirs()  # once per process: the second call does nothing
    finally:
        shutil.rmtree(top)


@pytest.mark.parametrize("method", [*ISOLATED, "none"])
async def test_a_closed_session_leaves_no_directory_behind(method: str) -> None:
    skip_unless_available(method)
    async with attack_session(method) as repl:
        await repl.run_cell("open('notes.txt', 'w').write('slack text')")
        workdir = repl.workdir
    assert workdir is not None
    assert not await asyncio.to_thread(os.path.exists, workdir)
