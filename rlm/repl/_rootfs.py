"""The worker's filesystem under unshare, built by the worker itself before any generated code
runs: a fresh tmpfs root holding only the entries `_view` lists (read-only binds of host
files, links, directories, four device nodes), a fresh /proc of its PID namespace and its own
size-limited tmpfs; then pivot_root into it and detach the old root, so nothing of the host
stays reachable. Loaded by `_worker.py` as a sibling module; imports nothing from `rlm`.
"""

from __future__ import annotations

import os
from typing import Any

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND = 1, 2, 4, 8, 32, 4096
_MNT_DETACH = 2
_ST_TO_MS = {  # statvfs flags a read-only remount must keep (a user namespace locks them)
    os.ST_NOSUID: MS_NOSUID,
    os.ST_NODEV: MS_NODEV,
    os.ST_NOEXEC: MS_NOEXEC,
    os.ST_NOATIME: 1024,
    os.ST_NODIRATIME: 2048,
    os.ST_RELATIME: 1 << 21,
}
_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}  # the stdlib has no pivot_root
_ROOT_TMPFS = "mode=0755,size=1m"
_PR_CAPBSET_DROP, _PR_SET_SECUREBITS = 24, 28
_SECUREBITS_NO_ROOT = 0xEF  # uid 0 gains nothing on exec or setuid, and that is locked


class Libc:
    """The few system calls the stdlib lacks; ctypes loads only on the paths that need it."""

    def __init__(self) -> None:
        import ctypes

        self.ctypes = ctypes
        self.lib = ctypes.CDLL(None, use_errno=True)

    def check(self, result: int, what: str) -> None:
        if result != 0:
            err = self.ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")

    def prctl(self, option: int, arg: int) -> int:
        ulong = self.ctypes.c_ulong
        return int(self.lib.prctl(option, ulong(arg), ulong(0), ulong(0), ulong(0)))

    def mount(
        self, source: str | None, target: str, fstype: str | None, flags: int, data: str = ""
    ) -> None:
        def raw(text: str | None) -> bytes | None:
            return None if text is None else os.fsencode(text)

        result = self.lib.mount(
            raw(source), raw(target), raw(fstype), self.ctypes.c_ulong(flags), raw(data or None)
        )
        self.check(result, f"mount {target}")

    def pivot_root(self, new_root: str, put_old: str) -> None:
        machine = os.uname().machine
        number = _PIVOT_ROOT.get(machine)
        if number is None:
            raise OSError(f"pivot_root: no system call number known for {machine}")
        self.check(self.lib.syscall(number, os.fsencode(new_root), os.fsencode(put_old)), "pivot")

    def umount2(self, target: str, flags: int) -> None:
        self.check(self.lib.umount2(os.fsencode(target), flags), f"umount {target}")


def _read_only(libc: Libc, path: str) -> None:
    kept = sum(bit for st, bit in _ST_TO_MS.items() if os.statvfs(path).f_flag & st)
    libc.mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | kept)


def _mount_point(path: str, directory: bool) -> None:
    if directory:
        os.makedirs(path, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "a"):
            pass


def build_root(libc: Libc, spec: dict[str, Any]) -> None:
    """Become a process whose / holds `spec["entries"]`, /proc and the tmpfs `workdir`.

    The new root is a tmpfs mounted over the (empty) host directory at `workdir`, which this
    mount namespace alone sees; host paths are bound into it before the switch, by name.
    """
    workdir = spec["workdir"]
    os.umask(0o022)  # what is made below must stay traversable after the uid drop
    new = workdir.rstrip("/")
    libc.mount("tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, _ROOT_TMPFS)
    read_only = []
    for entry in spec["entries"]:
        kind, path = entry[0], new + entry[-1]
        if kind == "dir":
            os.makedirs(path, exist_ok=True)
        elif kind == "symlink":
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.symlink(entry[1], path)
        elif kind in ("bind", "dev"):
            source = entry[1] if kind == "bind" else entry[-1]
            _mount_point(path, os.path.isdir(source))
            libc.mount(source, path, None, MS_BIND)
            if kind == "bind":
                read_only.append(path)
    for path in read_only:
        _read_only(libc, path)
    os.makedirs(new + "/proc", exist_ok=True)
    libc.mount("proc", new + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    own = new + workdir
    os.makedirs(own, exist_ok=True)
    size = int(spec["disk_bytes"])
    libc.mount("tmpfs", own, "tmpfs", MS_NOSUID | MS_NODEV, f"mode=0700,size={size}")
    uid = spec.get("uid")
    if uid is not None:
        os.chown(own, uid, uid)
    libc.mount(None, new, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, _ROOT_TMPFS)
    # Stack the old root under the new one, then let go of it: nothing of it stays mounted
    # where this namespace can reach it.
    os.chdir(new)
    libc.pivot_root(".", ".")
    libc.umount2(".", _MNT_DETACH)
    os.chdir("/")


def reopen_null(fds: tuple[int, ...]) -> None:
    """Point `fds` at the new root's /dev/null: nothing held open leads to the old one."""
    null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    for fd in fds:
        os.dup2(null, fd, inheritable=fd <= 2)
    os.close(null)


def drop_capabilities(libc: Libc) -> None:
    """Root inside a user namespace: keep the uid, give up every capability for good."""
    libc.check(libc.prctl(_PR_SET_SECUREBITS, _SECUREBITS_NO_ROOT), "securebits")
    cap = 0
    while libc.prctl(_PR_CAPBSET_DROP, cap) == 0:  # fails past the last capability
        cap += 1
    header = (libc.ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (libc.ctypes.c_uint32 * 6)()
    libc.check(libc.lib.capset(header, data), "capset")
