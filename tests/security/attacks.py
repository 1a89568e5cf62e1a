"""Generated code that tries to break out of the REPL sandbox, and how to tell it failed.

Shared by the attack tests and `benchmarks/sandbox.py`. Each attack is one cell run through a
real `REPLSession`; its `check` looks at the cell's output and at the host (files, servers,
processes) and returns "" when the attack was contained, else what got through.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rlm.repl import CellResult, REPLSession, SandboxLimits
from rlm.repl._cgroup import probe_cgroups
from rlm.repl._sandbox import probe

SECRETS = ("sk-host-secret-0451", "xoxb-host-secret-0451", "dotenv-secret-0451", "db-secret-0451")
PROCESS_LIMIT = 32  # the limits attack sessions run with: small, so attacks end fast
FILE_SIZE_MB = 8
MEMORY_MB = 512
DISK_MB = 64
ISOLATED = ("bwrap", "unshare")


def skip_unless_available(method: str) -> None:
    """Skip the calling test, naming what is missing, when `method` cannot isolate here."""
    import pytest

    if method == "auto":
        reasons = [probe(m) for m in ISOLATED]
        reason = "; ".join(reasons) if all(reasons) else ""
    else:
        reason = "" if method == "none" else probe(method)
    if reason:
        pytest.skip(f"SANDBOX NOT TESTED with {method}: {reason}")


async def _no_subcalls(*args: object) -> str:
    raise RuntimeError("no sub-calls in attack cells")


async def _long_answers(template: str, chunks: list[str]) -> list[str]:
    """A map that answers at length: a worker that will not read it must not stall the host."""
    return ["x" * 1000 for _ in chunks]


def attack_session(method: str, cell_timeout: float = 10.0) -> REPLSession:
    """A session with small limits, so attacks on them end fast; isolation as given."""
    limits = SandboxLimits(
        memory_mb=MEMORY_MB,
        file_size_mb=FILE_SIZE_MB,
        processes=PROCESS_LIMIT,
        disk_mb=DISK_MB,
        isolation=method,
        require_isolation=method != "none",
    )
    return REPLSession(
        "the context",
        llm_query=_no_subcalls,
        parallel_query=_long_answers,
        cell_timeout=cell_timeout,
        limits=limits,
    )


class CountingListener:
    """A server on the host (TCP on 127.0.0.1, or an abstract unix socket) that only counts
    the connections it accepts."""

    def __init__(self, unix_name: str | None = None) -> None:
        if unix_name is None:
            self.sock = socket.create_server(("127.0.0.1", 0))
            self.port = self.sock.getsockname()[1]
        else:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind("\0" + unix_name)
            self.sock.listen()
            self.port = 0
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() so the name is freed
        self.sock.close()


@dataclass
class Target:
    """What the attacks aim at, set up by the host side: its pid, its files, its servers."""

    host_pid: int
    project_dir: Path
    llm_port: int  # the fake LLM server's port
    tcp: CountingListener
    unix: CountingListener
    unix_name: str
    host_markers: list[Path] = field(default_factory=list)  # files that must never appear
    host_files: dict[str, bytes] = field(default_factory=dict)  # in project_dir, unchanged

    def marker(self, name: str) -> Path:
        path = Path("/tmp") / f"rlm-attack-{os.getpid()}-{name}"
        self.host_markers.append(path)
        return path


@contextmanager
def attack_target(project_dir: Path, llm_port: int) -> Iterator[Target]:
    """Secrets in a `.env` and a `.db` file in `project_dir`; a TCP and a unix listener."""
    host_files = {
        ".env": f"OPENAI_API_KEY={SECRETS[2]}\n".encode(),
        "rlm.db": b"SQLite format 3\x00" + SECRETS[3].encode(),
        "host.pth": b"# a .pth file: Python runs its import lines at every start\n",
    }
    for name, content in host_files.items():
        (project_dir / name).write_bytes(content)
    unix_name = f"rlm-attack-{uuid.uuid4().hex}"
    tcp, unix = CountingListener(), CountingListener(unix_name)
    target = Target(os.getpid(), project_dir, llm_port, tcp, unix, unix_name)
    target.host_files = host_files
    try:
        yield target
    finally:
        tcp.close()
        unix.close()
        for marker in target.host_markers:
            marker.unlink(missing_ok=True)


Check = Callable[[CellResult, Target], str]


@dataclass(frozen=True)
class Attack:
    name: str
    code: Callable[[Target], str]
    check: Check
    needs_isolation: bool = True  # only a sandbox stops it (or trying it unisolated is unsafe)
    cell_timeout: float = 10.0
    layer: str = ""  # a cgroup layer it needs ("memory"), where the machine may lack it

    def missing_layer(self) -> str:
        """Why this machine cannot stop the attack, if it needs a layer that is missing."""
        if not self.layer:
            return ""
        support = probe_cgroups()
        if getattr(support, self.layer):
            return ""
        return "; ".join(m for m in support.missing if m.startswith(self.layer)) or self.layer


def _no_leak(result: CellResult, target: Target) -> str:
    leaked = [s for s in SECRETS if s in result.output]
    if leaked:
        return f"secrets reached the code: {leaked}"
    if "LEAK" in result.output:
        return result.output.strip().splitlines()[-1]
    return ""


def _and(*checks: Check) -> Check:
    def check(result: CellResult, target: Target) -> str:
        for one in checks:
            problem = one(result, target)
            if problem:
                return problem
        return ""

    return check


def _said(word: str) -> Check:
    def check(result: CellResult, target: Target) -> str:
        return "" if word in result.output else f"expected {word!r} in: {result.output[-300:]!r}"

    return check


def _no_markers(result: CellResult, target: Target) -> str:
    found = [str(m) for m in target.host_markers if m.exists()]
    found += [str(p) for p in target.project_dir.glob("pwned*")]
    return f"the code wrote on the host: {found}" if found else ""


def _no_connections(result: CellResult, target: Target) -> str:
    if target.tcp.accepted or target.unix.accepted:
        return "the code reached a server on the host"
    return ""


def _try(body: str, blocked: str = "blocked") -> str:
    """`body` indented under a try whose OSError means the attack failed."""
    inner = "\n".join("    " + line for line in body.strip().splitlines())
    return f"try:\n{inner}\nexcept OSError as exc:\n    print('{blocked}:', type(exc).__name__)"


ATTACKS: list[Attack] = [
    Attack(
        "environment",
        lambda t: "import os\nprint(dict(os.environ))\nprint(open('/proc/self/environ').read())",
        _no_leak,
        needs_isolation=False,
    ),
    Attack(
        "host_process_environ",
        lambda t: _try(f"print('LEAK', open('/proc/{t.host_pid}/environ').read())"),
        _and(_no_leak, _said("blocked")),
    ),
    Attack(
        "pid1_environ",
        lambda t: _try("print('read', open('/proc/1/environ').read())"),
        _no_leak,
    ),
    Attack(
        "other_processes",
        lambda t: (
            "import os\npids = [p for p in os.listdir('/proc') if p.isdigit()]\n"
            f"print('LEAK host pid visible' if '{t.host_pid}' in pids else 'blocked', len(pids))"
        ),
        _and(_no_leak, _said("blocked")),
    ),
    Attack(
        "dotenv_file",
        lambda t: _try(f"print('LEAK', open({str(t.project_dir / '.env')!r}).read())"),
        _and(_no_leak, _said("blocked")),
    ),
    Attack(
        "database_file",
        lambda t: _try(f"print('LEAK', open({str(t.project_dir / 'rlm.db')!r}, 'rb').read())"),
        _and(_no_leak, _said("blocked")),
    ),
    Attack(
        "search_filesystem",
        lambda t: (
            f"""
import os
found = []
for top in os.listdir('/'):
    if top in ('usr', 'bin', 'sbin', 'lib', 'lib32', 'lib64', 'libx32', 'proc', 'sys', 'dev'):
        continue
    for root, dirs, files in os.walk('/' + top):
        found += [os.path.join(root, f) for f in files if f == '.env' or f.endswith('.db')]
        if root == {str(t.project_dir)!r}:
            found.append(root)
print('LEAK', found) if found else print('blocked: nothing found')
"""
        ),
        _and(_no_leak, _said("blocked")),
    ),
    Attack(
        "loopback_llm_server",
        lambda t: (
            f"""
import urllib.error, urllib.request
try:
    urllib.request.urlopen('http://127.0.0.1:{t.llm_port}/v1/models', timeout=2)
    print('LEAK reached the server')
except urllib.error.HTTPError as exc:  # an answer, even an error, means it got through
    print('LEAK reached the server', exc.code)
except OSError as exc:
    print('blocked:', exc)
"""
        ),
        _and(_no_leak, _said("blocked")),
    ),
    Attack(
        "loopback_tcp",
        lambda t: _try(
            f"import socket\nsocket.create_connection(('127.0.0.1', {t.tcp.port}), 2)\n"
            "print('LEAK connected')"
        ),
        _and(_no_leak, _said("blocked"), _no_connections),
    ),
    Attack(
        "abstract_unix_socket",
        lambda t: _try(
            "import socket\ns = socket.socket(socket.AF_UNIX)\n"
            f"s.connect('\\0{t.unix_name}')\nprint('LEAK connected')"
        ),
        _and(_no_leak, _said("blocked"), _no_connections),
    ),
    Attack(
        "outside_address",
        # 203.0.113.0/24 is TEST-NET-3. connect() on a UDP socket sends nothing: it only asks
        # for a route, so no packet leaves even where the sandbox failed; and the table too.
        lambda t: (
            """
import socket
routes = [line.split()[1] for line in open('/proc/net/route').readlines()[1:]]
probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    probe.connect(('203.0.113.1', 80))
    print('LEAK a route out via', probe.getsockname(), routes)
except OSError as exc:
    print('blocked:' if not routes else 'LEAK routes:', exc.errno, routes)
finally:
    probe.close()
"""
        ),
        _and(_no_leak, _said("blocked")),
    ),
    Attack(
        "dns",
        lambda t: _try("import socket\nprint('LEAK', socket.getaddrinfo('example.com', 443))"),
        _and(_no_leak, _said("blocked")),
    ),
    Attack(
        "write_project_dir",
        lambda t: _try(f"open({str(t.project_dir / 'pwned.txt')!r}, 'w').write('pwned')"),
        _and(_said("blocked"), _no_markers),
    ),
    Attack(
        "write_tmp",
        lambda t: _try(f"open({str(t.marker('tmp'))!r}, 'w').write('pwned')\nprint('wrote')"),
        _no_markers,
    ),
    Attack(
        "shell",
        lambda t: (
            "import subprocess\n"
            f"r = subprocess.run(['sh', '-c', 'echo pwned > {t.marker('shell')}'],"
            " capture_output=True, text=True)\nprint('shell exit', r.returncode, r.stderr)"
        ),
        _no_markers,
    ),
    Attack(
        "signal_host",
        lambda t: _try(f"import os, signal\nos.kill({t.host_pid}, signal.SIGTERM)\nprint('sent')"),
        _said("blocked"),
    ),
    Attack(
        "regain_root",
        lambda t: (
            """
import os
try:
    os.setuid(0)
except OSError:
    pass
caps = [l.split()[1] for l in open('/proc/self/status') if l.startswith('CapEff')][0]
print('blocked' if int(caps, 16) == 0 else f'LEAK capabilities {caps}')
"""
        ),
        _said("blocked"),
    ),
    Attack(
        "fork_bomb",
        # Bounded even if the limit did not hold: at most 4 x the limit children, then kill.
        lambda t: (
            f"""
import os, signal
children = []
for _ in range({PROCESS_LIMIT * 4}):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        signal.pause()
        os._exit(0)
    children.append(pid)
for pid in children:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
print('blocked after' if len(children) < {PROCESS_LIMIT} else 'LEAK forked', len(children))
"""
        ),
        _said("blocked after"),
    ),
    Attack(
        "unbounded_memory",
        lambda t: "hoard = []\nwhile True:\n    hoard.append(bytearray(64 * 1024 * 1024))",
        lambda r, t: "" if "MemoryError" in r.output or r.worker_lost else "no memory limit",
        needs_isolation=False,
    ),
    Attack(
        "endless_loop",
        lambda t: "while True:\n    pass",
        lambda r, t: (
            "" if r.worker_lost and "s limit" in r.output and "memory" not in r.output else r.output
        ),
        needs_isolation=False,
        cell_timeout=1.0,
    ),
    Attack(
        "print_gigabytes",
        lambda t: "line = 'x' * 10 ** 8\nfor _ in range(30):\n    print(line)",
        lambda r, t: "" if len(r.output) < 1_100_000 and "dropped" in r.output else "not capped",
        needs_isolation=False,
    ),
    Attack(
        # stderr is a pipe the host drains into a few KB: four times the file size limit go
        # through, and neither the host's disk nor its memory (the harness checks) holds them.
        "stderr_flood",
        lambda t: (
            "import os\nchunk = b'x' * 2 ** 20\n"
            f"for _ in range({FILE_SIZE_MB * 4}):\n    os.write(2, chunk)\nprint('drained')"
        ),
        _said("drained"),
        needs_isolation=False,
    ),
    Attack(
        "forged_protocol_frame",
        # Claim a 4 GB message on the pipe to the host: the host must refuse, not buffer it.
        lambda t: (
            """
import os, stat
for fd in map(int, os.listdir('/proc/self/fd')):
    try:
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.write(fd, (2 ** 32 - 1).to_bytes(4, 'big') + b'x' * 65536)
    except OSError:
        pass
print('no pipe accepted the frame')
"""
        ),
        lambda r, t: "" if r.worker_lost or "no pipe" in r.output else r.output[-300:],
        needs_isolation=False,
    ),
]

# The attacks on the host's side of the protocol live beside these; they count in the same set.
from tests.security.host_attacks import HOST_ATTACKS  # noqa: E402

ATTACKS += HOST_ATTACKS
