"""One cgroup per REPL sandbox, holding the sandbox wrapper and every process under it: a
process cap, a memory cap that counts tmpfs pages, a CPU weight, and a switch that kills it all.

Each limit uses cgroup v2 where our own v2 cgroup can give a child that controller, else the
cgroup v1 hierarchy of that controller, so pure v2 machines and v1/v2 hybrids both work. What
this machine offers is probed once per process and announced on the "rlm.sandbox" logger.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import re
import signal
import threading
import time
from dataclasses import dataclass

from rlm.repl._cgroup_memory import memory_headroom

logger = logging.getLogger("rlm.sandbox")

# -- what operators read ---------------------------------------------------------------------
MSG_LAYERS = "REPL sandbox cgroups: %s."
MSG_MISSING = (
    "REPL sandbox cgroups: %s. Sandboxes run without those limits; delegate the controllers to "
    "this process's cgroup (cgroup v2) or mount their cgroup v1 hierarchies to add them."
)
MSG_LAYER_FAILED = (
    "REPL sandbox cgroups: could not set up the %s limit under %s (%s); sandboxes run without it."
)
MSG_NOT_REMOVED = "REPL sandbox cgroups: could not remove %s (%s); it is left behind."
MSG_MEMORY_CAPPED = (
    "REPL sandbox cgroups: a sandbox gets %d MiB of memory, not the %d MiB configured: that is "
    "what the host's own memory cgroup (%s) has left. Raise the host's limit or lower the "
    "sandbox's."
)
REASON_MISSING = "{layer}: no writable {layer} controller ({v2}, {v1})"
REASON_NO_KILL = "kill: no writable cgroup to kill from ({v2}, no v1 freezer, pids or memory)"

_NAME = re.compile(r"rlm-sandbox-(\d+)-\d+\Z")  # rlm-sandbox-<host pid>-<serial>
_LIMITED = ("memory", "pids", "cpu")  # each named like its controller
_KILL_ROUNDS = 60  # about three seconds: a process stuck in the kernel cannot hold us longer
# Marks itself the OOM killer's first choice, which all it forks inherits: whatever runs out of
# memory, the sandbox dies before the host. Written by a root host, the value is also the
# floor (oom_score_adj_min) that no unprivileged process below can go under.
OOM_SCORE_ADJ = 1000
_DIES_FIRST = f"{{ echo {OOM_SCORE_ADJ} > /proc/self/oom_score_adj; }} 2>/dev/null; "
# Moves itself into every cgroup.procs file given, then becomes the sandbox: the wrapper and
# all it forks start inside, with no moment outside. Paths arrive as arguments, never as code.
_ENTER_SCRIPT = _DIES_FIRST + (
    'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n-1)); '
    'done; exec "$@"'
)
_DIES_FIRST_SCRIPT = _DIES_FIRST + 'exec "$@"'

_serial = itertools.count()
_lock = threading.Lock()
_support: CgroupSupport | None = None
_warned: set[str] = set()
_MEMORY_FLOOR = 64 * 1024 * 1024  # a worker needs about this much to start at all


@dataclass(frozen=True)
class CgroupSupport:
    """For each layer, the cgroup directory sandbox cgroups are made under (this process's own
    cgroup in the hierarchy that layer uses), or None, with the reason in `missing`."""

    memory: str | None
    pids: str | None
    cpu: str | None
    kill: str | None
    missing: tuple[str, ...]


# Where a hierarchy is mounted, the cgroup it shows there, and its controllers ({""} for v2,
# as /proc/self/cgroup names it).
_Mount = tuple[str, str, frozenset[str]]


def probe_cgroups() -> CgroupSupport:
    """Which cgroup layers this process can give its sandboxes; probed and announced once."""
    global _support
    with _lock:
        if _support is None:
            _support = _probe()
            _announce(_support)
        return _support


def _probe() -> CgroupSupport:
    mounts, own = _cgroup_mounts(), _own_cgroups()
    v2_dir, v2_why = _own_writable(mounts, own, "")
    found: dict[str, str | None] = {}
    missing = []
    for layer in _LIMITED:
        v2_reason = _v2_delegate(v2_dir, layer) if v2_dir else v2_why
        v1_dir, v1_reason = _own_writable(mounts, own, layer)
        found[layer] = v1_dir if v2_reason else v2_dir
        if found[layer] is None:
            missing.append(REASON_MISSING.format(layer=layer, v2=v2_reason, v1=v1_reason))
    # cgroup.kill and cgroup.freeze need no controller, only a v2 cgroup we may make children
    # in; without one, a v1 cgroup lists the processes to kill one by one.
    kill = v2_dir
    for controller in ("freezer", "pids", "memory"):
        kill = kill or _own_writable(mounts, own, controller)[0]
    if kill is None:
        missing.append(REASON_NO_KILL.format(v2=v2_why))
    return CgroupSupport(found["memory"], found["pids"], found["cpu"], kill, tuple(missing))


def _cgroup_mounts() -> list[_Mount]:
    mounts = []
    for line in _read("/proc/self/mountinfo").splitlines():
        mount, _, fs = (part.split() for part in line.partition(" - "))
        if len(mount) >= 5 and len(fs) >= 3 and fs[0] in ("cgroup", "cgroup2"):
            controllers = frozenset(fs[2].split(",") if fs[0] == "cgroup" else [""])
            mounts.append((_unescape(mount[4]), _unescape(mount[3]), controllers))
    return mounts


def _unescape(field: str) -> str:  # mountinfo writes space, tab, newline and \ as octal
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _own_cgroups() -> dict[str, str]:
    """This process's cgroup path per controller; "" is the key of the v2 hierarchy."""
    own: dict[str, str] = {}
    for line in _read("/proc/self/cgroup").splitlines():
        _, controllers, path = line.split(":", 2)
        own.update((controller, path) for controller in controllers.split(","))
    return own


def _own_writable(
    mounts: list[_Mount], own: dict[str, str], controller: str
) -> tuple[str | None, str]:
    """Our cgroup's directory in the hierarchy of `controller` ("" for v2) if we may make
    children in it; else None and why not."""
    version = "v1" if controller else "cgroup v2"
    for mount_path, mount_root, controllers in mounts:
        if controller in controllers and controller in own:
            root, path = mount_root.rstrip("/"), own[controller]
            relative = path[len(root) :].strip("/")
            if path == root or path.startswith(root + "/"):
                directory = os.path.join(mount_path, relative) if relative else mount_path
                if ".." not in relative.split("/") and os.access(directory, os.W_OK):
                    return directory, ""
            return None, f"{version} not writable"
    return None, f"{version} not mounted"


def _v2_delegate(directory: str, controller: str) -> str:
    """Why children of `directory` cannot have `controller` (enabling it if we may), or ""."""
    if controller in _read(os.path.join(directory, "cgroup.subtree_control"), "").split():
        return ""
    if controller not in _read(os.path.join(directory, "cgroup.controllers"), "").split():
        return "cgroup v2 not delegated to our cgroup"
    try:  # the one write outside our own directories: what cgroup v2 delegation consists of
        _write(os.path.join(directory, "cgroup.subtree_control"), "+" + controller)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            return "cgroup v2 not delegated: our cgroup holds processes and is not the root"
        return f"cgroup v2 not delegated: {exc.strerror}"
    return ""


def _announce(support: CgroupSupport) -> None:
    layers = {"memory": support.memory, "pids": support.pids, "cpu": support.cpu}
    used = [f"{name} via cgroup {_version(d)} {d}" for name, d in layers.items() if d]
    if support.kill:
        how = "cgroup.kill" if _version(support.kill) == "v2" else "SIGKILL to each process"
        used.append(f"kill via {how} in {support.kill}")
    if used:
        logger.info(MSG_LAYERS, "; ".join(used))
    if support.missing:
        logger.warning(MSG_MISSING, "; ".join(support.missing))


def _version(directory: str) -> str:
    return "v2" if os.path.exists(os.path.join(directory, "cgroup.controllers")) else "v1"


def _limit_files(
    layer: str, v2: bool, memory_bytes: int, max_processes: int, cpu_weight: int
) -> list[tuple[str, str, bool]]:
    """(file, value, required) for one layer; files not required are hardening, if present."""
    shares = min(max(cpu_weight * 1024 // 100, 2), 262_144)  # v1's 1024 is v2's weight 100
    memory = str(memory_bytes)
    return {  # no swap either, or tmpfs pages could leave the cap for it
        ("memory", True): [("memory.max", memory, True), ("memory.swap.max", "0", False)],
        ("memory", False): [
            ("memory.limit_in_bytes", memory, True),
            ("memory.memsw.limit_in_bytes", memory, False),
        ],
        ("pids", v2): [("pids.max", str(max_processes), True)],
        ("cpu", True): [("cpu.weight", str(min(max(cpu_weight, 1), 10_000)), True)],
        ("cpu", False): [("cpu.shares", str(shares), True)],
    }.get((layer, v2), [])


def dies_first(argv: list[str]) -> list[str]:
    """A command that makes itself the OOM killer's first choice and then runs `argv` (for
    sandboxes without a cgroup; `SandboxCgroup.wrap` does this too)."""
    return ["/bin/sh", "-c", _DIES_FIRST_SCRIPT, "rlm-oom", *argv]


class SandboxCgroup:
    """One sandbox's cgroup: a directory per hierarchy used. Start the sandbox with `wrap`."""

    def __init__(self, directories: tuple[str, ...], memory_limit: int | None = None) -> None:
        for directory in directories:  # the only directories this class writes to or removes
            if not _NAME.match(os.path.basename(directory)):
                raise ValueError(f"not a sandbox cgroup: {directory}")
        self.directories = directories
        self.memory_limit = memory_limit  # bytes, for the whole sandbox; None if not bounded

    @classmethod
    def create(
        cls, *, memory_bytes: int, max_processes: int, cpu_weight: int = 100
    ) -> SandboxCgroup | None:
        """A new sandbox cgroup with these limits, or None if this machine offers no layer."""
        support = probe_cgroups()
        parents = [p for p in (support.memory, support.pids, support.cpu, support.kill) if p]
        name = f"rlm-sandbox-{os.getpid()}-{next(_serial)}"
        memory_limit: int | None = None
        while any(os.path.exists(os.path.join(p, name)) for p in parents):
            name = f"rlm-sandbox-{os.getpid()}-{next(_serial)}"  # left by a dead host of our pid
        made: dict[str, str] = {}  # parent -> the directory made under it
        used: set[str] = set()
        if support.memory:  # nested in the host's cgroup: never ask for more than it has left
            memory_bytes = _within_host(support.memory, memory_bytes)
        for layer in (*_LIMITED, "kill"):
            parent: str | None = getattr(support, layer)
            if parent is None:
                continue
            directory = os.path.join(parent, name)
            try:
                if parent not in made:
                    os.mkdir(directory, 0o755)
                    made[parent] = directory
                v2 = _version(directory) == "v2"
                for file, value, required in _limit_files(
                    layer, v2, memory_bytes, max_processes, cpu_weight
                ):
                    _write(os.path.join(directory, file), value, check=required)
            except OSError as exc:
                if layer not in _warned:  # once per layer, not once per session
                    _warned.add(layer)
                    logger.warning(MSG_LAYER_FAILED, layer, parent, exc.strerror or exc)
                continue
            used.add(directory)
            if layer == "memory":
                memory_limit = memory_bytes
        for directory in set(made.values()) - used:
            _remove_directory(directory)
        return cls(tuple(d for d in made.values() if d in used), memory_limit) if used else None

    @property
    def procs_files(self) -> tuple[str, ...]:
        return tuple(os.path.join(d, "cgroup.procs") for d in self.directories)

    def wrap(self, argv: list[str]) -> list[str]:
        """A command that enters this cgroup and then runs `argv`."""
        files = self.procs_files
        return ["/bin/sh", "-c", _ENTER_SCRIPT, "rlm-cgroup", str(len(files)), *files, *argv]

    def current_processes(self) -> set[int]:
        return {int(pid) for procs in self.procs_files for pid in _read(procs, "").split()}

    def kill(self) -> None:
        """SIGKILL everything in the sandbox; returns once it is empty, or after a few seconds."""
        switch = self._find("cgroup.kill")
        for attempt in range(_KILL_ROUNDS):
            if not self.current_processes():
                return
            # After a few rounds, one by one too: a process may be outside the switch's cgroup.
            if switch is None or not _write(switch, "1", check=False) or attempt >= 5:
                self._kill_listed()
            time.sleep(min(0.001 * 2**attempt, 0.05))

    def remove(self) -> None:
        """Kill everything in the sandbox and remove its directories."""
        self.kill()
        for directory in self.directories:
            _remove_directory(directory)

    def _find(self, file: str) -> str | None:
        paths = (os.path.join(d, file) for d in self.directories)
        return next((path for path in paths if os.path.exists(path)), None)

    def _kill_listed(self) -> None:
        # Freezing stops forks while we list and signal; pidfds, checked against a second
        # listing, make sure a pid that exited and was reused outside is never signalled.
        freezer = self._find("cgroup.freeze") or self._find("freezer.state")
        v2_freezer = bool(freezer and freezer.endswith("cgroup.freeze"))
        if freezer:  # no need to wait for it to settle: the next round sees any straggler
            _write(freezer, "1" if v2_freezer else "FROZEN", check=False)
        pidfds: dict[int, int] = {}
        try:
            for pid in self.current_processes():
                with contextlib.suppress(OSError):
                    pidfds[pid] = os.pidfd_open(pid)
            still_inside = self.current_processes()
            for pid, pidfd in pidfds.items():
                if pid in still_inside:
                    with contextlib.suppress(OSError):
                        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        finally:
            for pidfd in pidfds.values():
                os.close(pidfd)
            if freezer:  # a frozen process dies of SIGKILL only once thawed
                _write(freezer, "0" if v2_freezer else "THAWED", check=False)


def _within_host(parent: str, memory_bytes: int) -> int:
    headroom = memory_headroom(parent)
    if headroom is None or headroom >= memory_bytes:
        return memory_bytes
    capped = max(headroom, _MEMORY_FLOOR)
    if capped < memory_bytes and "memory-capped" not in _warned:
        _warned.add("memory-capped")
        logger.warning(MSG_MEMORY_CAPPED, capped // 2**20, memory_bytes // 2**20, parent)
    return min(capped, memory_bytes)


def remove_stale_cgroups() -> int:
    """Kill and remove sandbox cgroups left by hosts no longer alive; how many were removed.
    A host is judged by its pid, so hosts sharing these cgroups must share our PID namespace."""
    support = probe_cgroups()
    parents = {p for p in (support.memory, support.pids, support.cpu, support.kill) if p}
    stale: dict[str, list[str]] = {}
    for parent in sorted(parents):
        for name in os.listdir(parent) if os.path.isdir(parent) else []:
            match = _NAME.match(name)
            # A zombie or a process of another user still shows in /proc: alive, left alone.
            if match and not os.path.exists(f"/proc/{match.group(1)}"):
                stale.setdefault(name, []).append(os.path.join(parent, name))
    for directories in stale.values():
        SandboxCgroup(tuple(directories)).remove()
    return sum(not os.path.exists(d) for dirs in stale.values() for d in dirs)


def _remove_directory(directory: str) -> None:
    for attempt in range(5):  # the kernel may let go of a just-emptied cgroup a moment late
        try:
            os.rmdir(directory)
        except OSError as exc:
            if exc.errno == errno.EBUSY and attempt < 4:
                time.sleep(0.02)
                continue
            if exc.errno != errno.ENOENT:
                logger.warning(MSG_NOT_REMOVED, directory, exc.strerror)
        return


def _read(path: str, default: str | None = None) -> str:
    """The file's text; `default` if it cannot be read and one is given."""
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except OSError:
        if default is None:
            raise
        return default


def _write(path: str, text: str, *, check: bool = True) -> bool:
    """Write a file that exists (never create one); False on failure, unless `check`."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            os.write(descriptor, text.encode())
        finally:
            os.close(descriptor)
    except OSError:
        if check:
            raise
        return False
    return True
