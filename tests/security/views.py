"""What a worker sees of the filesystem, listed from inside it, and what it must see, listed
by `rlm.repl._view` without starting one: the tests compare the two exactly."""

from __future__ import annotations

import json
import os

from rlm.repl._sandbox import WORKER_FILES
from rlm.repl._view import visible_paths, worker_view

# A cell printing, as JSON, every path under / (links not followed; /proc's own entries left
# out, it is the PID namespace's fresh one) and how many of them are not directories.
WALK_CELL = """
import json as _json, os as _os
_seen, _count = ['/'], 0
for _top, _dirs, _files in _os.walk('/'):
    if _top == '/proc':
        _dirs[:] = []
        continue
    _seen += [_os.path.join(_top, _n) for _n in _dirs + _files]
    _count += len(_files)
print(_json.dumps({'paths': sorted(_seen), 'files': _count}))
"""


def expected_paths(workdir: str, packages: tuple[str, ...] = ()) -> set[str]:
    """The paths a worker at `workdir` must list, and no others."""
    view = worker_view(WORKER_FILES, workdir=workdir, uid=os.getuid(), packages=packages)
    return visible_paths(view, workdir)


def walked(output: str) -> tuple[set[str], int]:
    """(every path the walk found, how many were not directories)."""
    found = json.loads(output)
    return set(found["paths"]), int(found["files"])
