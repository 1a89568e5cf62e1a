"""How much memory a cgroup and its ancestors can still give (cgroup v1 or v2), so that a
sandbox cgroup made under the host's own never asks for more than the host has left."""

from __future__ import annotations

import os

_UNLIMITED_V1 = 2**62  # v1 writes "no limit" as a page-rounded 2**63 - 1


def memory_headroom(directory: str) -> int | None:
    """What the memory cgroup `directory` and its ancestors can still give: the least, over
    each one with a limit, of its limit less what it uses (reclaimable file cache excluded);
    None if none of them has a limit."""
    least: int | None = None
    while os.path.exists(os.path.join(directory, "memory.usage_in_bytes")) or os.path.exists(
        os.path.join(directory, "memory.max")
    ):
        v2 = _version(directory) == "v2"
        text = _read(os.path.join(directory, "memory.max" if v2 else "memory.limit_in_bytes"), "")
        stat = _memory_stat(directory)
        limit = _as_limit(text)
        if not v2:  # v1 also knows the tightest limit above, even where it is not mounted
            limit = min(
                limit or _UNLIMITED_V1,
                _as_limit(str(stat.get("hierarchical_memory_limit", ""))) or _UNLIMITED_V1,
            )
            limit = None if limit >= _UNLIMITED_V1 else limit
        if limit is not None:
            usage_file = "memory.current" if v2 else "memory.usage_in_bytes"
            usage = int(_read(os.path.join(directory, usage_file), "0").strip() or 0)
            usage -= stat.get("inactive_file" if v2 else "total_inactive_file", 0)
            left = max(limit - max(usage, 0), 0)
            least = left if least is None else min(least, left)
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    return least


def _as_limit(text: str) -> int | None:
    text = text.strip()
    if not text.isdigit():
        return None  # "max", or unreadable
    return None if int(text) >= _UNLIMITED_V1 else int(text)


def _memory_stat(directory: str) -> dict[str, int]:
    found = {}
    for line in _read(os.path.join(directory, "memory.stat"), "").splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            found[key] = int(value)
    return found


def _version(directory: str) -> str:
    return "v2" if os.path.exists(os.path.join(directory, "cgroup.controllers")) else "v1"


def _read(path: str, default: str) -> str:
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except OSError:
        return default
