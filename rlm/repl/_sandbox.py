"""How the REPL worker is confined: which isolation method this machine has, and the command
that starts the worker inside it.

`bwrap` (bubblewrap) builds the worker an empty root holding only the system libraries, the
interpreter and the worker's own files, in new network, PID, IPC and UTS namespaces.
`unshare` (util-linux) gives it new network, mount and PID namespaces; the worker then hides
every host directory but those same paths itself, before it runs any code (see `_worker.py`).
Under both, the host's own directories (its working directory, the project checkout, where
`.env` or the database live) are covered even when they lie inside a visible path, and the
worker's directory is a size-limited tmpfs of its own that the host never reads.
Each method is probed once per process by running the interpreter inside it, with exactly the
mounts a worker gets.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlm._exceptions import ConfigurationError
from rlm.repl._identity import lease_uid
from rlm.repl._protocol import SCHEMAS, ProtocolError, check_message, pack, read_message

logger = logging.getLogger("rlm.sandbox")

ISOLATION_CHOICES = ("auto", "bwrap", "unshare", "none")
_WRAPPERS = ("bwrap", "unshare")  # the order "auto" tries them in

# -- what users and operators read ----------------------------------------------------------
MSG_CHOSEN = "REPL sandbox: isolating workers with %s (%s)."
MSG_DESCRIBE = {
    "bwrap": "own network, PID, IPC and mount namespaces; only the interpreter, system "
    "libraries and the worker's directory are visible",
    "unshare": "own network, PID, IPC and mount namespaces; host directories other than the "
    "interpreter, system libraries and the worker's directory are hidden",
}
MSG_NONE_WORKS = (
    "REPL sandbox: NO ISOLATION. Neither bwrap nor unshare works on this machine (%s), so "
    "generated code runs with the network and every file this process can read. Install "
    "bubblewrap (apt-get install bubblewrap), or set require_isolation=True to refuse to run."
)
MSG_NONE_CHOSEN = (
    "REPL sandbox: isolation='none'; generated code runs with the network and every file "
    "this process can read."
)
MSG_REQUIRED = (
    "The REPL sandbox requires isolation but no method works on this machine ({reasons}); "
    "install bubblewrap or allow running without isolation."
)
MSG_METHOD_BROKEN = (
    "The REPL sandbox was asked to isolate with {method} but it does not work here "
    "({reason}); install it or choose isolation='auto'."
)
MSG_LAYER_MISSING = (
    "REPL sandbox: %s runs without one of its layers: %s. The other layers still hold; the "
    "security guide (docs/security.md) says what this one would add."
)
MSG_BAD_CHOICE = "isolation must be one of {choices}, got {value!r}."
MSG_NONE_REQUIRED = "isolation='none' contradicts require_isolation=True; choose one."

# System paths the worker may see (read-only); everything else of the host stays out of view.
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_ETC_FILES = ("/etc/ld.so.cache", "/etc/localtime")
_VISIBLE_TOP = {"usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "proc", "dev"}
_DEV_MOUNTS = ("/dev/shm", "/dev/mqueue", "/dev/pts", "/dev/hugepages")  # shared with the host

# The worker's own files, the only ones of this package it sees (bound read-only where they
# lie): its script, and the wire format and seccomp filter it loads as sibling modules.
WORKER_SCRIPT = str(Path(__file__).with_name("_worker.py"))
WORKER_FILES = (
    WORKER_SCRIPT,
    *(str(Path(__file__).with_name(name)) for name in ("_protocol.py", "_seccomp.py")),
)
# A directory holding one of these, above the host's working directory or the project, is
# the host's: covered too.
_HOST_MARKERS = (".env",)
_HOST_MARKER_SUFFIXES = (".db", ".sqlite", ".sqlite3")


@dataclass(frozen=True)
class WorkerLaunch:
    """How to start one worker: the command, and what the worker must do to itself first."""

    method: str  # "bwrap" | "unshare" | "none"
    argv: list[str]
    confine: dict[str, Any] = field(default_factory=dict)  # sent in the init message


def validate_choice(isolation: str, require_isolation: bool) -> None:
    if isolation not in ISOLATION_CHOICES:
        choices = ", ".join(repr(c) for c in ISOLATION_CHOICES)
        raise ConfigurationError(MSG_BAD_CHOICE.format(choices=choices, value=isolation))
    if isolation == "none" and require_isolation:
        raise ConfigurationError(MSG_NONE_REQUIRED)


def interpreter_paths() -> list[str]:
    """Directories the interpreter needs: its prefixes (the venv included) and stdlib."""
    found = {
        sys.prefix,
        sys.exec_prefix,
        sys.base_prefix,
        sys.base_exec_prefix,
        os.path.dirname(os.path.realpath(sys.executable)),
    }
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        found.add(sysconfig.get_paths()[key])
    paths = sorted(os.path.realpath(p) for p in found if p and os.path.isdir(p))
    roots: list[str] = []
    for path in paths:  # a directory inside another one on the list is visible already
        if not any(_inside(path, r) for r in roots):
            roots.append(path)
    # The venv is often reached through a symlinked prefix: keep the link's own path too.
    for prefix in (sys.prefix, sys.exec_prefix):
        if os.path.isdir(prefix) and not any(_inside(prefix, r) for r in roots):
            roots.append(prefix)
    return roots


def _inside(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def host_private_dirs(extra: Sequence[str] = ()) -> list[str]:
    """Directories of the host the worker must never see, even inside a visible path: the
    working directory, the checkout this package runs from (not a site-packages install),
    the directories of `extra` paths (the database, `.env`), and any ancestor of those that
    holds a `.env` or a database file."""
    package_root = Path(__file__).resolve().parents[2]
    starts = [os.getcwd(), *(p if os.path.isdir(p) else os.path.dirname(p) for p in extra)]
    if not {"site-packages", "dist-packages"} & set(package_root.parts):
        starts.append(str(package_root))
    found = set()
    for start in starts:
        path = os.path.realpath(start)
        found.add(path)
        for ancestor in Path(path).parents:
            if _holds_host_secrets(str(ancestor)):
                found.add(str(ancestor))
    return sorted(p for p in found if p != "/" and p not in _SYSTEM_DIRS and os.path.isdir(p))


def _holds_host_secrets(directory: str) -> bool:
    if directory == "/" or directory in _SYSTEM_DIRS:
        return False
    try:
        names = os.listdir(directory)
    except OSError:
        return False
    return any(n in _HOST_MARKERS or n.endswith(_HOST_MARKER_SUFFIXES) for n in names)


def build_launch(
    method: str,
    command: list[str],
    *,
    workdir: str,
    uid: int | None,
    disk_bytes: int,
    private: Sequence[str] = (),
) -> WorkerLaunch:
    """The command that runs `command` isolated by `method`.

    The worker sees the system directories, the interpreter and `WORKER_FILES` read-only,
    and a fresh tmpfs of `disk_bytes` at `workdir`; `private` (see `host_private_dirs`) is
    covered wherever it lies inside something visible, and what the worker needs from inside
    it is bound back.
    """
    visible = [*interpreter_paths(), *WORKER_FILES]
    cover = [
        p
        for p in private
        if any(_inside(p, v) for v in (*visible, *_SYSTEM_DIRS)) and not _inside(workdir, p)
    ]
    if method == "bwrap":
        return WorkerLaunch(
            method,
            _bwrap_argv(command, workdir, visible, cover, uid, disk_bytes),
            {
                "uid": uid,
                "pid_namespace": True,
                "host_pid_namespace": _pid_namespace(),
                "workdir": workdir,
            },
        )
    if method == "unshare":
        confine = {
            "hide": _unshare_hidden(),
            "keep": [*visible, *(f for f in _ETC_FILES if os.path.exists(f))],
            "cover": cover,
            "workdir": workdir,
            "disk_bytes": disk_bytes,
            "uid": uid,
            "drop_caps": uid is None,
            "pid_namespace": True,
            "host_pid_namespace": _pid_namespace(),
        }
        return WorkerLaunch(method, _unshare_argv(command), confine)
    return WorkerLaunch("none", command, {"pdeathsig": True, "workdir": workdir})


def _pid_namespace() -> str:
    """The host's PID namespace, which the worker checks it is not in before kill(-1)."""
    return os.readlink("/proc/self/ns/pid")


def _bwrap_argv(
    command: list[str],
    workdir: str,
    visible: list[str],
    cover: list[str],
    uid: int | None,
    disk_bytes: int,
) -> list[str]:
    argv = [
        shutil.which("bwrap") or "bwrap",
        "--unshare-net",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--hostname",
        "sandbox",
        "--die-with-parent",
        "--new-session",
    ]
    if uid is not None:  # root host: no user namespace, so the worker can drop to `uid`
        argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:  # and no user namespace of its own below this one
        argv += ["--unshare-user", "--disable-userns"]
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    for path in _ETC_FILES:
        argv += ["--ro-bind-try", path, path]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    # bwrap makes missing parents of a mount point 0700, which the dropped uid cannot enter.
    parents = {os.path.dirname(p) for p in (*visible, workdir)}
    for path in sorted(_with_ancestors(parents)):
        if not any(_inside(path, d) for d in (*_SYSTEM_DIRS, *cover)):
            argv += ["--perms", "0755", "--dir", path]
    # Binds first, then the covers over what they show of the host, then what the worker
    # needs from under a cover, bound back on top of it.
    under_cover = [p for p in visible if any(_inside(p, c) for c in cover)]
    for path in visible:
        if path not in under_cover and not any(_inside(path, d) for d in _SYSTEM_DIRS):
            argv += ["--ro-bind", path, path]
    for path in cover:
        argv += ["--perms", "0755", "--tmpfs", path]
    for path in sorted(_with_ancestors({os.path.dirname(p) for p in under_cover})):
        if any(_inside(path, c) and path != c for c in cover):
            argv += ["--perms", "0755", "--dir", path]
    for path in under_cover:
        argv += ["--ro-bind", path, path]
    for path in cover:
        argv += ["--remount-ro", path]
    argv += ["--size", str(disk_bytes), "--perms", "0777", "--tmpfs", workdir]
    argv += ["--remount-ro", "/", "--chdir", workdir, "--"]
    return argv + command


def _with_ancestors(paths: set[str]) -> set[str]:
    found = set()
    for path in paths:
        while path not in ("/", ""):
            found.add(path)
            path = os.path.dirname(path)
    return found


def _unshare_argv(command: list[str]) -> list[str]:
    unshare = shutil.which("unshare") or "unshare"
    setpriv = shutil.which("setpriv") or "setpriv"
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    # The outer unshare does not fork, so setpriv's parent-death signal lands on the process
    # the host started (and after the user namespace, which would clear it); the inner one
    # forks the worker into the new PID namespace and kills it when it goes.
    return [
        unshare,
        *user,
        "--net",
        "--mount",
        "--ipc",
        "--uts",
        "--",
        setpriv,
        "--pdeathsig",
        "KILL",
        "--",
        unshare,
        "--pid",
        "--fork",
        "--mount-proc",
        "--kill-child",
        "--",
        *command,
    ]


def _unshare_hidden() -> list[str]:
    hidden = []
    for name in sorted(os.listdir("/")):
        path = "/" + name
        if name not in _VISIBLE_TOP and not os.path.islink(path):
            hidden.append(path)
    return hidden + [p for p in _DEV_MOUNTS if os.path.ismount(p)]


# -- choosing a method, once per process ----------------------------------------------------

# The probe also checks the point of it all: the worker sees no network interface but loopback.
_PROBE_CODE = (
    "import socket\n"
    "names = [name for _, name in socket.if_nameindex()]\n"
    "print('ok' if set(names) <= {'lo'} else 'interfaces: ' + ', '.join(names), end='')"
)
_probe_lock = threading.RLock()  # a probe announces what it finds
_probes: dict[tuple[str, str], str] = {}  # (method, wrapper path) -> "" if it works, else why
_announced: set[str] = set()


def worker_command() -> list[str]:
    return [sys.executable, "-I", "-B", WORKER_SCRIPT]  # -B: it writes no bytecode anywhere


def init_frame(
    launch: WorkerLaunch,
    *,
    context_fd: int,
    context_kind: str,
    rlimits: dict[str, int],
    subcalls: bool,
) -> dict[str, Any]:
    """The first frame a worker reads: where its context is, and how to confine itself."""
    return {
        "op": "init",
        "context_fd": context_fd,
        "context_kind": context_kind,
        "limits": rlimits,
        "subcalls": subcalls,
        "sandbox": launch.confine,
    }


def probe(method: str) -> str:
    """Run a worker under `method` once; "" if it works, else the reason it does not."""
    wrapper = shutil.which(method)
    if wrapper is None:
        return f"{method} is not installed"
    if method == "unshare" and shutil.which("setpriv") is None:
        return "setpriv (util-linux) is not installed"
    with _probe_lock:
        key = (method, wrapper)
        if key not in _probes:
            _probes[key] = _run_probe(method)
        return _probes[key]


def _run_probe(method: str) -> str:
    """A real worker, launched and confined exactly as a session's, runs one probing cell."""
    try:  # a root host's worker drops to a uid of its own (see _identity)
        lease = lease_uid() if os.geteuid() == 0 else None
    except OSError as exc:
        return f"{method} has no uid for its worker: {exc.strerror or exc}"
    try:
        return _probe_as(method, lease.uid if lease else None)
    finally:
        if lease is not None:
            lease.release()


def _probe_as(method: str, uid: int | None) -> str:
    workdir = tempfile.mkdtemp(prefix=f"rlm-repl-{os.getpid()}-probe-")
    launch = build_launch(
        method,
        worker_command(),
        workdir=workdir,
        uid=uid,
        disk_bytes=1024 * 1024,
        private=host_private_dirs(),
    )
    with tempfile.TemporaryFile() as context:
        init = init_frame(
            launch, context_fd=context.fileno(), context_kind="str", rlimits={}, subcalls=False
        )
        exec_cell = {"op": "exec", "code": _PROBE_CODE}
        try:
            done = subprocess.run(
                launch.argv,
                cwd="/",
                input=pack(init) + pack(exec_cell) + pack({"op": "exit"}),
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                capture_output=True,
                timeout=20,
                check=False,
                pass_fds=(context.fileno(),),
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{method} failed to run: {exc}"
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    frames = _frames(done.stdout)
    ready = frames[0] if frames else {}
    if ready.get("op") == "ready" and "error" in ready:
        return f"{method} could not confine the worker: {ready['error']}"
    output = frames[1].get("output") if len(frames) > 1 else None
    if output == "ok":
        for layer in ready.get("missing", []):
            _announce(f"{method}:{layer}", logging.WARNING, MSG_LAYER_MISSING, method, layer)
        return ""
    if isinstance(output, str):
        return f"{method} left the network visible ({output[:200]})"
    lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
    return f"{method} exited with {done.returncode}: {lines[-1] if lines else 'no output'}"


def _frames(data: bytes) -> list[dict[str, Any]]:
    """The messages in what a probed worker wrote, up to the first that is not one."""
    stream = io.BytesIO(data)

    def read_exactly(n: int) -> bytes:
        piece = stream.read(n)
        if len(piece) < n:
            raise EOFError
        return piece

    frames = []
    while True:
        try:
            frames.append(check_message(read_message(read_exactly, len(data)), SCHEMAS))
        except (EOFError, ProtocolError):
            return frames


def choose_method(isolation: str, require_isolation: bool) -> tuple[str, str]:
    """(method, error): the method to use, or "" and a one-sentence reason it cannot run."""
    if isolation == "none":
        _announce("none", logging.WARNING, MSG_NONE_CHOSEN)
        return "none", ""
    if isolation in _WRAPPERS:
        reason = probe(isolation)
        if reason:
            return "", MSG_METHOD_BROKEN.format(method=isolation, reason=reason)
        _announce(isolation, logging.INFO, MSG_CHOSEN, isolation, MSG_DESCRIBE[isolation])
        return isolation, ""
    reasons = []
    for method in _WRAPPERS:
        reason = probe(method)
        if not reason:
            _announce(method, logging.INFO, MSG_CHOSEN, method, MSG_DESCRIBE[method])
            return method, ""
        reasons.append(reason)
    if require_isolation:
        return "", MSG_REQUIRED.format(reasons="; ".join(reasons))
    _announce("unavailable", logging.WARNING, MSG_NONE_WORKS, "; ".join(reasons))
    return "none", ""


def _announce(key: str, level: int, message: str, *args: object) -> None:
    with _probe_lock:
        if key in _announced:
            return
        _announced.add(key)
    logger.log(level, message, *args)
