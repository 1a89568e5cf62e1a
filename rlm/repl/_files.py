"""The files a session keeps on the host: the context, in a read-only file without a name,
and the worker directories that crashed hosts left behind, removed once per process."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Sequence
from typing import IO

from rlm.repl._cgroup import remove_stale_cgroups


def write_context(context: str | Sequence[str]) -> tuple[IO[bytes], str]:
    """The context in a file with no name (only the returned handle reaches it), open
    read-only for the worker to inherit; returns (file, kind)."""
    kind = "str" if isinstance(context, str) else "list"
    with tempfile.TemporaryFile() as writable:
        if isinstance(context, str):
            writable.write(context.encode("utf-8"))
        else:
            writable.write(json.dumps([str(c) for c in context], ensure_ascii=False).encode())
        writable.flush()
        # A second, read-only description of the same file: the worker cannot change it,
        # and read-only for its owner too, so that nothing can open it again for writing.
        read_only = os.open(f"/proc/self/fd/{writable.fileno()}", os.O_RDONLY | os.O_CLOEXEC)
        os.fchmod(writable.fileno(), 0o400)
    return os.fdopen(read_only, "rb"), kind


_STALE_DIR = re.compile(r"rlm-(?:repl|probe)-(?:(\d+)-.*|[a-z0-9_]{8})")
_stale_lock = threading.Lock()
_stale_checked = False


def remove_stale_workdirs() -> int:
    """Once per process: remove worker directories that crashed hosts left behind (a dead
    host's pid in the name, or the unnamed ones of earlier versions)."""
    global _stale_checked
    with _stale_lock:
        if _stale_checked:
            return 0
        _stale_checked = True
    removed = 0
    top = tempfile.gettempdir()
    for name in os.listdir(top):
        match = _STALE_DIR.fullmatch(name)
        if match is None or (match.group(1) and os.path.exists(f"/proc/{match.group(1)}")):
            continue  # not ours, or its host is alive
        shutil.rmtree(os.path.join(top, name), ignore_errors=True)  # never follows a link
        removed += 1
    with contextlib.suppress(OSError):
        removed += remove_stale_cgroups()
    return removed
