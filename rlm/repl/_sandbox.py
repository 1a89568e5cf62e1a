"""How the REPL worker is confined: which isolation method this machine has, and the command
that starts the worker inside it.

The worker's filesystem is the allowlist `_view` computes (the base interpreter, its standard
library and the libraries they load, the worker's files, a minimal /etc, four device nodes, a
fresh /proc and its own size-limited tmpfs, plus the distributions an operator names), the
same under both methods: `bwrap` (bubblewrap) builds it over an empty root, in new network,
PID, IPC and UTS namespaces; under `unshare` (util-linux: new network, mount, IPC and PID
namespaces) the worker builds it itself and pivots into it before it runs any code (see
`_rootfs.py`). Nothing else of the host exists for the worker: no cwd, checkout, `.env`,
database, venv or /usr.
Each method is probed once per process by running the interpreter inside it, with exactly the
mounts a worker gets.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlm._exceptions import ConfigurationError
from rlm.repl._identity import lease_uid
from rlm.repl._protocol import SCHEMAS, ProtocolError, check_message, pack, read_message
from rlm.repl._view import View, interpreter, package_binds, worker_view

logger = logging.getLogger("rlm.sandbox")

ISOLATION_CHOICES = ("auto", "bwrap", "unshare", "none")
_WRAPPERS = ("bwrap", "unshare")  # the order "auto" tries them in

# -- what users and operators read ----------------------------------------------------------
MSG_CHOSEN = "REPL sandbox: isolating workers with %s (%s)."
MSG_DESCRIBE = {
    "bwrap": "own network, PID, IPC and mount namespaces; an allowlisted filesystem",
    "unshare": "own network, PID, IPC and mount namespaces; an allowlisted filesystem, "
    "built by the worker before any code runs",
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

# The worker's own files, the only ones of this package it sees (bound read-only where they
# lie): its script, and the wire format, seccomp filter and root builder it loads as siblings.
WORKER_SCRIPT = str(Path(__file__).with_name("_worker.py"))
WORKER_FILES = (
    WORKER_SCRIPT,
    *(str(Path(__file__).with_name(n)) for n in ("_protocol.py", "_seccomp.py", "_rootfs.py")),
)


@dataclass(frozen=True)
class WorkerLaunch:
    """How to start one worker: the command, and what the worker must do to itself first."""

    method: str  # "bwrap" | "unshare" | "none"
    argv: list[str]
    confine: dict[str, Any] = field(default_factory=dict)  # sent in the init message
    env: dict[str, str] = field(default_factory=dict)  # added to the worker's environment


def validate_choice(isolation: str, require_isolation: bool) -> None:
    if isolation not in ISOLATION_CHOICES:
        choices = ", ".join(repr(c) for c in ISOLATION_CHOICES)
        raise ConfigurationError(MSG_BAD_CHOICE.format(choices=choices, value=isolation))
    if isolation == "none" and require_isolation:
        raise ConfigurationError(MSG_NONE_REQUIRED)


def build_launch(
    method: str,
    command: list[str],
    *,
    workdir: str,
    uid: int | None,
    disk_bytes: int,
    packages: Sequence[str] = (),
) -> WorkerLaunch:
    """The command that runs `command` isolated by `method`.

    The worker sees exactly `worker_view` (the distributions `packages` included) and a
    fresh tmpfs of `disk_bytes` at `workdir`.
    """
    common: dict[str, Any] = {
        "uid": uid,
        "pid_namespace": True,
        "host_pid_namespace": _pid_namespace(),
    }
    if method == "bwrap":
        inside = uid if uid is not None else os.getuid()  # bwrap maps the host's own uid
        view = worker_view(WORKER_FILES, workdir=workdir, uid=inside, packages=packages)
        argv = _bwrap_argv(command, view, workdir, uid, disk_bytes)
        confine = {**common, "workdir": workdir, "sys_path": view.sys_path}
        return WorkerLaunch(method, argv, confine, view.env)
    if method == "unshare":
        inside = uid if uid is not None else 0  # root of its own user namespace, else `uid`
        view = worker_view(WORKER_FILES, workdir=workdir, uid=inside, packages=packages)
        confine = {
            **common,
            "entries": view.entries,
            "sys_path": view.sys_path,
            "workdir": workdir,
            "disk_bytes": disk_bytes,
            "drop_caps": uid is None,
        }
        return WorkerLaunch(method, _unshare_argv(command), confine, view.env)
    sys_path = package_binds(packages)[1]
    return WorkerLaunch(
        "none", command, {"pdeathsig": True, "workdir": workdir, "sys_path": sys_path}
    )


def _pid_namespace() -> str:
    """The host's PID namespace, which the worker checks it is not in before kill(-1)."""
    return os.readlink("/proc/self/ns/pid")


def _bwrap_argv(
    command: list[str], view: View, workdir: str, uid: int | None, disk_bytes: int
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
    argv += bwrap_view_args(view)
    argv += ["--proc", "/proc"]
    argv += ["--size", str(disk_bytes), "--perms", "0777", "--tmpfs", workdir]
    argv += ["--remount-ro", "/", "--chdir", workdir, "--"]
    return argv + command


def bwrap_view_args(view: View) -> list[str]:
    """The view as bwrap arguments over its empty root (mount points it makes are 0755, so
    the dropped uid can pass them)."""
    argv = []
    for entry in view.entries:
        kind = entry[0]
        if kind == "dir":
            argv += ["--perms", "0755", "--dir", entry[1]]
        elif kind == "symlink":
            argv += ["--symlink", entry[1], entry[2]]
        elif kind == "bind":
            argv += ["--ro-bind", entry[1], entry[2]]
        elif kind == "dev":
            argv += ["--dev-bind", entry[1], entry[1]]
    for name, value in view.env.items():
        argv += ["--setenv", name, value]
    return argv


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
    """The base interpreter (no venv needed): -I ignores PYTHON* variables and the script's
    directory, -S skips site-packages, -B writes no bytecode anywhere."""
    return [interpreter(), "-I", "-S", "-B", "-X", "utf8", WORKER_SCRIPT]


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
    try:
        launch = build_launch(
            method,
            worker_command(),
            workdir=workdir,
            uid=uid,
            disk_bytes=1024 * 1024,
        )
    except OSError as exc:  # no ldd, or a library that cannot be read
        shutil.rmtree(workdir, ignore_errors=True)
        return f"{method} cannot list the worker's files ({exc})"
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
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **launch.env},
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
