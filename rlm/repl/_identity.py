"""One identity per sandbox on a root host: a uid leased from a large range, held by no other
sandbox on the machine (of this host or another) and run by no visible process.

Root ignores RLIMIT_NPROC and owns the host's files, so a root host's worker drops to a uid of
its own. Two sandboxes sharing a uid would share its process count (one's fork bomb makes the
other's fork fail), so each session leases one: a random uid from `UID_SPAN` uids above
`UID_BASE`, locked with flock(2) on a file named after it in a directory every host on the
machine uses (`/run`, else `/dev/shm`). The kernel drops a lock when its holder dies, so a
crashed host leaks nothing; a uid some visible process runs as is skipped too. Hosts that share
neither that directory nor a PID namespace (separate containers) can still meet only by chance,
about one in `UID_SPAN` per pair of live sandboxes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import stat
import threading
from collections.abc import Callable

# Below 2**31 (tools that read a uid as signed) and below systemd's reserved 0x7FFE0000 range.
UID_BASE = 1_500_000_000
UID_SPAN = 2**29
LEASE_DIRS = ("/run/rlm-sandbox-uids", "/dev/shm/rlm-sandbox-uids")
_ATTEMPTS = 64

MSG_NO_LEASE_DIR = (
    "REPL sandbox: no safe directory for uid leases ({reasons}); cannot give the worker a uid "
    "of its own."
)
MSG_NO_UID = "REPL sandbox: found no free uid for the worker after {attempts} tries."


class UidLease:
    """A uid held for one sandbox until `release` (or until this process dies)."""

    def __init__(self, uid: int, fd: int, directory_fd: int) -> None:
        self.uid = uid
        self._fd: int | None = fd
        self._directory_fd = directory_fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Give the uid back; call once no process runs as it any more."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        # Unlinked while still locked: whoever opened the name meanwhile finds, once the lock
        # is theirs, that the file is no longer the one named, and starts over.
        with contextlib.suppress(OSError):
            os.unlink(str(self.uid), dir_fd=self._directory_fd)
        os.close(fd)

    def __repr__(self) -> str:
        return f"UidLease(uid={self.uid}, held={self.held})"


def _random_uid() -> int:
    return UID_BASE + secrets.randbelow(UID_SPAN)


_directory_lock = threading.Lock()
_directory_fds: dict[tuple[str, ...], int] = {}  # opened once per process, kept open


def lease_directory(candidates: tuple[str, ...] = LEASE_DIRS) -> int:
    """An fd of the first usable lease directory: made 0700 if absent, and used only if it is
    a real directory (not a link) owned by root that no one else may write to."""
    with _directory_lock:
        if candidates in _directory_fds:
            return _directory_fds[candidates]
        reasons = []
        for path in candidates:
            try:
                fd = _open_safe_directory(path)
            except OSError as exc:
                reasons.append(f"{path}: {exc.strerror or exc}")
                continue
            _directory_fds[candidates] = fd
            _remove_stale_leases(fd)
            return fd
        raise OSError(errno.EACCES, MSG_NO_LEASE_DIR.format(reasons="; ".join(reasons)))


def _open_safe_directory(path: str) -> int:
    if not os.path.isdir(os.path.dirname(path)):
        raise OSError(errno.ENOENT, "its parent does not exist")
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    info = os.fstat(fd)
    if info.st_uid != 0 or stat.S_IMODE(info.st_mode) & 0o077:
        os.close(fd)
        raise OSError(errno.EPERM, "not owned by root with mode 0700")
    return fd


def uids_in_use() -> set[int]:
    """Every uid (real, effective, saved or filesystem) of a process visible in /proc."""
    found: set[int] = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
                for line in status:
                    if line.startswith("Uid:"):
                        found.update(int(field) for field in line.split()[1:])
                        break
        except (OSError, ValueError):
            continue  # exited meanwhile
    return found


def lease_uid(
    *, directory_fd: int | None = None, choose: Callable[[], int] | None = None
) -> UidLease:
    """Lease a uid no other sandbox holds and no visible process runs as."""
    directory = lease_directory() if directory_fd is None else directory_fd
    pick = choose or _random_uid
    for _ in range(_ATTEMPTS):
        uid = pick()
        fd = _try_lock(directory, uid)
        if fd is None:
            continue
        if uid in uids_in_use():
            _unlock_and_unlink(directory, uid, fd)
            continue
        return UidLease(uid, fd, directory)
    raise OSError(errno.EAGAIN, MSG_NO_UID.format(attempts=_ATTEMPTS))


def _try_lock(directory: int, uid: int) -> int | None:
    """A locked fd of the lease file of `uid`, or None if another holder has it."""
    name = str(uid)
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(name, flags, 0o600, dir_fd=directory)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    try:  # the holder we waited on may have released and unlinked it just before
        named = os.stat(name, dir_fd=directory, follow_symlinks=False)
    except FileNotFoundError:
        named = None
    held = os.fstat(fd)
    if named is None or (named.st_dev, named.st_ino) != (held.st_dev, held.st_ino):
        os.close(fd)
        return None
    return fd


def _remove_stale_leases(directory: int) -> int:
    """Remove the lease files that crashed hosts left (no one holds their lock); how many."""
    removed = 0
    for name in os.listdir(directory):
        if name.isdigit():
            with contextlib.suppress(OSError):
                fd = _try_lock(directory, int(name))
                if fd is not None:
                    _unlock_and_unlink(directory, int(name), fd)
                    removed += 1
    return removed


def _unlock_and_unlink(directory: int, uid: int, fd: int) -> None:
    with contextlib.suppress(OSError):
        os.unlink(str(uid), dir_fd=directory)
    os.close(fd)
