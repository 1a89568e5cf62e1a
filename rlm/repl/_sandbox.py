"""How the REPL worker is confined: which isolation method this machine has, and the command
that starts the worker inside it.

`bwrap` (bubblewrap) builds the worker an empty root holding only the system libraries, the
interpreter and the worker's own directory, in new network, PID, IPC and UTS namespaces.
`unshare` (util-linux) gives it new network, mount and PID namespaces; the worker then hides
every host directory but those same paths itself, before it runs any code (see `_worker.py`).
Each method is probed once per process by running the interpreter inside it.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Any

from rlm._exceptions import ConfigurationError

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
MSG_BAD_CHOICE = "isolation must be one of {choices}, got {value!r}."
MSG_NONE_REQUIRED = "isolation='none' contradicts require_isolation=True; choose one."

# System paths the worker may see (read-only); everything else of the host stays out of view.
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_ETC_FILES = ("/etc/ld.so.cache", "/etc/localtime")
_VISIBLE_TOP = {"usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "proc", "dev"}
_DEV_MOUNTS = ("/dev/shm", "/dev/mqueue", "/dev/pts", "/dev/hugepages")  # shared with the host

# Root ignores RLIMIT_NPROC, so on a root host the worker drops to a uid of its own; one per
# session, so that a fork bomb in one worker cannot use up another worker's process budget.
_UID_BASE = 1_700_000_000
_uid_serial = itertools.count()


def sandbox_uid() -> int:
    """A fresh unprivileged uid for one session's worker (used only when the host is root)."""
    return _UID_BASE + (os.getpid() % 4096) * 4096 + next(_uid_serial) % 4096


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
    # A directory inside another one on the list, or inside /usr, is visible already.
    roots: list[str] = []
    for path in paths:
        if not any(_inside(path, r) for r in (*roots, *_SYSTEM_DIRS)):
            roots.append(path)
    # The venv is often reached through a symlinked prefix: keep the link's own path too.
    for prefix in (sys.prefix, sys.exec_prefix):
        if os.path.isdir(prefix) and not any(_inside(prefix, r) for r in (*roots, *_SYSTEM_DIRS)):
            roots.append(prefix)
    return roots


def _inside(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def build_launch(
    method: str, command: list[str], *, workdir: str, keep: list[str], uid: int | None
) -> WorkerLaunch:
    """The command that runs `command` isolated by `method`; `keep` lists read-only paths."""
    visible = [*interpreter_paths(), *keep]
    # The host's own directory (project, .env, database) stays hidden even when it lies
    # inside a path the worker may see, such as an app installed under /usr.
    cwd = os.getcwd()
    cover = [cwd] if _covered(cwd, visible, workdir) else []
    if method == "bwrap":
        return WorkerLaunch(
            method, _bwrap_argv(command, workdir, visible, cover, uid), {"uid": uid}
        )
    if method == "unshare":
        confine = {
            "hide": _unshare_hidden(),
            "keep": [*visible, *(f for f in _ETC_FILES if os.path.exists(f))],
            "writable": [workdir],
            "cover": cover,
            "uid": uid,
            "drop_caps": uid is None,
        }
        return WorkerLaunch(method, _unshare_argv(command), confine)
    return WorkerLaunch("none", command, {"pdeathsig": True})


def _covered(cwd: str, visible: list[str], workdir: str) -> bool:
    if cwd == "/" or any(_inside(p, cwd) for p in (*visible, workdir)):
        return False  # covering it would hide what the worker needs; it shows only those
    return any(_inside(cwd, p) for p in (*visible, *_SYSTEM_DIRS))


def _bwrap_argv(
    command: list[str], workdir: str, visible: list[str], cover: list[str], uid: int | None
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
    else:
        argv += ["--unshare-user"]
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
        if not any(_inside(path, d) for d in _SYSTEM_DIRS):
            argv += ["--perms", "0755", "--dir", path]
    for path in visible:
        argv += ["--ro-bind", path, path]
    for path in cover:  # after the binds it lies inside, or they would cover it back
        argv += ["--tmpfs", path]
    argv += ["--bind", workdir, workdir, "--remount-ro", "/", "--chdir", workdir, "--"]
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
    "import socket, sys\n"
    "names = [name for _, name in socket.if_nameindex()]\n"
    "sys.stdout.write('ok' if set(names) <= {'lo'} else 'interfaces: ' + ', '.join(names))"
)
_probe_lock = threading.Lock()
_probes: dict[tuple[str, str], str] = {}  # (method, wrapper path) -> "" if it works, else why
_announced: set[str] = set()


def probe(method: str) -> str:
    """Run the interpreter under `method` once; "" if it works, else the reason it does not."""
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
    with tempfile.TemporaryDirectory(prefix="rlm-probe-") as workdir:
        launch = build_launch(
            method,
            [sys.executable, "-I", "-c", _PROBE_CODE],
            workdir=workdir,
            keep=[],
            uid=None if os.geteuid() else sandbox_uid(),
        )
        try:
            done = subprocess.run(
                launch.argv,
                cwd=workdir,
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                capture_output=True,
                timeout=20,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{method} failed to run: {exc}"
    if done.returncode == 0 and done.stdout == b"ok":
        return ""
    if done.returncode == 0:
        return f"{method} left the network visible ({done.stdout.decode(errors='replace')})"
    lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
    return f"{method} exited with {done.returncode}: {lines[-1] if lines else 'no output'}"


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
