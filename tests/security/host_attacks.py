"""Attacks on the host that serves the worker: files it might follow, frames it might trust,
clocks and processes that might outlive a cell, and limits that held only per process.

Part of the attack set in `attacks.py` (which appends these to `ATTACKS`), so the attack tests
and `benchmarks/sandbox.py` run and count them too.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable

from rlm.repl._seccomp import _SYSCALLS
from tests.security.attacks import (
    DISK_MB,
    Attack,
    Check,
    Target,
    _and,
    _no_leak,
    _said,
)

# -- the host following the worker's files ------------------------------------------------------

# Names the host once kept in the worker's directory, and still tempting ones.
_BAIT = ("worker.stderr", "context.json", "context.txt")


def _bait_then_crash(make: Callable[[Target], str]) -> Callable[[Target], str]:
    """Plant something under each bait name, then die so that the host reads 'stderr'."""

    def code(t: Target) -> str:
        return f"""
import os, signal
for name in {_BAIT!r}:
    try:
        os.unlink(name)
    except OSError:
        pass
    try:
        {make(t)}
    except OSError as exc:
        print('could not plant', name, exc)
os.kill(os.getpid(), signal.SIGKILL)
"""

    return code


def _host_files_intact(result: object, target: Target) -> str:
    changed = [
        name
        for name, text in target.host_files.items()
        if (target.project_dir / name).read_bytes() != text
    ]
    return f"the host changed its own files: {changed}" if changed else ""


def _lost_worker(result: object, target: Target) -> str:
    return "" if getattr(result, "worker_lost", False) else "the worker was not replaced"


_FILE_ATTACKS = [
    ("symlink_to_host_environ", lambda t: f"os.symlink('/proc/{t.host_pid}/environ', name)"),
    ("symlink_to_dotenv", lambda t: f"os.symlink({str(t.project_dir / '.env')!r}, name)"),
    ("symlink_to_database", lambda t: f"os.symlink({str(t.project_dir / 'rlm.db')!r}, name)"),
    ("symlink_to_pth", lambda t: f"os.symlink({str(t.project_dir / 'host.pth')!r}, name)"),
    ("fifo", lambda t: "os.mkfifo(name)"),
    ("hard_link_to_database", lambda t: f"os.link({str(t.project_dir / 'rlm.db')!r}, name)"),
    ("directory", lambda t: "os.mkdir(name)"),
]

# -- frames the host might trust --------------------------------------------------------------

_FORGE = """
import os, stat, time
def forge(payload, tail=b''):
    for fd in map(int, os.listdir('/proc/self/fd')):
        try:
            if stat.S_ISFIFO(os.fstat(fd).st_mode):
                os.write(fd, len(payload).to_bytes(4, 'big') + payload + tail)
        except OSError:
            pass  # the pipe the host writes to: not ours to write
"""


def _forged(payload: bytes, wait: float = 5.0, tail: bytes = b"") -> Callable[[Target], str]:
    """A header written straight to the protocol pipe, then `tail` (raw parts)."""
    return lambda t: (
        f"{_FORGE}\nforge({payload!r}, {tail!r})\ntime.sleep({wait})\nprint('LEAK accepted')"
    )


def _refused(phrase: str) -> Check:
    def check(result: object, target: Target) -> str:
        output = getattr(result, "output", "")
        if getattr(result, "worker_lost", False) and phrase in output:
            return ""
        return f"the host did not refuse the frame ({phrase!r}): {output[-300:]!r}"

    return check


def _frame(**fields: object) -> bytes:
    return json.dumps(fields).encode()


_FRAME_ATTACKS = [
    (
        "frame_prompt_as_list",  # content parts: a provider would fetch the attacker's URL
        _frame(op="llm_query", prompt=[{"type": "image_url", "image_url": {"url": "x"}}]),
        "'prompt' has the wrong shape",
    ),
    ("frame_extra_field", _frame(op="llm_query", prompt="hi", model="gpt-4o"), "unknown field"),
    ("frame_deep_nesting", b"[" * 200_000 + b"]" * 200_000, "not a frame"),
    ("frame_final_without_kind", _frame(op="result", output="", error=False, final={}), "final"),
    (
        "frame_final_as_dict",
        _frame(op="result", output="", error=False, final={"kind": "text", "value": {"a": 1}}),
        "final",
    ),
    ("frame_unexpected_op", _frame(op="ready"), "unexpected 'ready'"),
    ("frame_chunks_not_strings", _frame(op="parallel_query", template="", chunks=[1]), "chunks"),
    ("frame_not_an_object", b"[1, 2]", "without an operation"),
    ("frame_invalid_utf8", b'{"op": "\xff"}', "not a frame"),
    ("frame_header_over_its_limit", _frame(op="llm_query", prompt="p" * 2_000_000), "header"),
    (
        "frame_part_it_does_not_hold",
        _frame(op="llm_query", prompt={"$part": 5}) + b"",
        "does not hold",
    ),
    ("frame_too_many_parts", _frame(op="ready", **{"$parts": 10**9}), "count of parts"),
]

# A well-formed header whose one part claims 4 GB: refused from its length, never buffered.
_HUGE_PART = (_frame(op="llm_query", prompt={"$part": 0}, **{"$parts": 1}), b"\xff\xff\xff\xff")

# -- clocks and processes ----------------------------------------------------------------------

_UNREAD_REPLY = f"""{_FORGE}
import json
frame = {{'op': 'parallel_query', 'template': '{{chunk}}', 'chunks': ['a'] * 20000}}
forge(json.dumps(frame).encode())
time.sleep(60)  # and never read the 20 MB answer
print('LEAK outran the clock')
"""


def _stopped_in_time(limit: float) -> Check:
    def check(result: object, target: Target) -> str:
        seconds = getattr(result, "seconds", 0.0)
        if getattr(result, "worker_lost", False) and seconds < limit + 2:
            return ""
        return f"the cell ran {seconds:.1f} s against a {limit:g} s limit"

    return check


# Python sleepers: the worker has no `sleep` binary to run.
_OUTLIVING = """
import os, subprocess, sys
subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(3001)'], start_new_session=True)
if os.fork() == 0:  # a daemon: double fork, own session
    if os.fork() == 0:
        os.setsid()
        os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(3002)'])
    os._exit(0)
os.wait()
print('started')
"""


def _no_process(*argvs: tuple[str, ...]) -> Check:
    """No process whose command line ends with one of `argvs` is left."""
    wanted = {"\0".join(argv).encode() + b"\0" for argv in argvs}

    def check(result: object, target: Target) -> str:
        deadline = time.monotonic() + 2
        while True:
            alive = _running(wanted)
            if not alive or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        return f"processes outlived their cell: {alive}" if alive else ""

    return check


def _running(cmdlines: set[bytes]) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{entry}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if cmdline.endswith(tuple(cmdlines)) and state != b"Z":
            found.append(int(entry))
    return found


# -- limits per sandbox, not per process -----------------------------------------------------

_MANY_PROCESSES_MEMORY = """
import os, time
kids = []
for _ in range(4):  # 4 x 200 MB: each under the 512 MB per-process limit, together over it
    pid = os.fork()
    if pid == 0:
        try:
            hoard = bytearray(200 * 2**20)
            for i in range(0, len(hoard), 4096):
                hoard[i] = 1
            time.sleep(2)
            os._exit(0)
        except MemoryError:
            os._exit(3)
    kids.append(pid)
codes = [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in kids]
print('LEAK all four held 200 MB' if codes == [0] * 4 else f'blocked: {codes}')
"""

_FILL_DIRECTORY = f"""
total = 0
try:
    for i in range(200):  # 1.6 GB in files each under the file size limit
        with open(f'fill{{i}}', 'wb') as f:
            f.write(b'x' * (8 * 2**20 - 1))
        total += 8
    print('LEAK wrote', total, 'MB')
except OSError as exc:
    print('blocked after' if total <= {DISK_MB} else 'LEAK wrote', total, 'MB', exc.errno)
"""

_NUMBERS = {name: (x86, arm) for name, x86, arm in _SYSCALLS}
_COLUMN = 1 if platform.machine() == "aarch64" else 0

# Each call is harmless if it went through (a missing mount point, a user namespace for the
# worker alone, a key in its own keyring), so that a failure here hurts nothing.
_FORBIDDEN_CALLS = f"""
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
params = ctypes.create_string_buffer(120)
nr = { ({n: v[_COLUMN] for n, v in _NUMBERS.items()})!r}
def outcome(result):
    return 'went through' if result != -1 else errno.errorcode.get(ctypes.get_errno(), '?')
found = {{
    'unshare(user)': outcome(libc.unshare(0x10000000)),
    'unshare(mount)': outcome(libc.unshare(0x00020000)),
    'mount': outcome(libc.mount(b'none', b'/nonexistent-rlm', b'tmpfs', 0, None)),
    'io_uring_setup': outcome(libc.syscall(nr['io_uring_setup'], 1, params)),
    'add_key': outcome(libc.syscall(nr['add_key'], b'user', b'rlm', b'v', 1, -2)),
    'keyctl': outcome(libc.syscall(nr['keyctl'], 0, -2, 0)),
    'ptrace': outcome(libc.syscall(nr['ptrace'], 0, 0, 0, 0)),
    'bpf': outcome(libc.syscall(nr['bpf'], 0, None, 0)),
    'perf_event_open': outcome(libc.syscall(nr['perf_event_open'], None, 0, -1, -1, 0)),
    'setns': outcome(libc.setns(-1, 0)),
}}
others = {{k: v for k, v in found.items() if v != 'EPERM'}}
print('blocked' if not others else f'LEAK {{others}}')
"""

_RELATIVE_WRITE = """
import os
with open('relative.txt', 'w') as f:
    f.write('mine')
print('wrote', os.getcwd(), open('relative.txt').read())
"""


def _relative_write_landed_home(result: object, target: Target) -> str:
    output = getattr(result, "output", "")
    if "wrote" not in output or "mine" not in output:
        return f"a relative write failed: {output[-300:]!r}"
    if (target.project_dir / "relative.txt").exists():
        return "a relative write landed in the host's directory"
    return ""


HOST_ATTACKS: list[Attack] = [
    *(
        Attack(
            f"host_follows_{name}",
            _bait_then_crash(make),
            _and(_no_leak, _host_files_intact, _lost_worker),
            needs_isolation=False,
        )
        for name, make in _FILE_ATTACKS
    ),
    *(
        Attack(name, _forged(payload), _and(_no_leak, _refused(phrase)), needs_isolation=False)
        for name, payload, phrase in _FRAME_ATTACKS
    ),
    Attack(
        "frame_part_over_the_message_limit",
        _forged(_HUGE_PART[0], tail=_HUGE_PART[1] + b"x" * 65536),
        _and(_no_leak, _refused("over 256 MB")),
        needs_isolation=False,
    ),
    Attack(
        "unread_reply_past_the_clock",
        lambda t: _UNREAD_REPLY,
        _stopped_in_time(3.0),
        needs_isolation=False,
        cell_timeout=3.0,
    ),
    Attack(
        "processes_outliving_the_cell",
        lambda t: _OUTLIVING,
        _and(
            _said("started"),
            _no_process(
                ("-c", "import time; time.sleep(3001)"), ("-c", "import time; time.sleep(3002)")
            ),
        ),
        needs_isolation=False,
    ),
    Attack(
        "memory_across_processes",
        lambda t: _MANY_PROCESSES_MEMORY,
        lambda r, t: "" if r.worker_lost or "blocked" in r.output else r.output[-300:],
        layer="memory",
    ),
    Attack("fill_the_directory", lambda t: _FILL_DIRECTORY, _said("blocked after")),
    Attack(
        "forbidden_system_calls",
        lambda t: _FORBIDDEN_CALLS,
        _said("blocked"),
        needs_isolation=False,
    ),
    Attack(
        "relative_write",
        lambda t: _RELATIVE_WRITE,
        _relative_write_landed_home,
        needs_isolation=False,
    ),
]
