"""The run and workspace a log line is about, and the replica that wrote it.

A run's task starts in a context where `RUN_ID` and `TEAM_ID` are set (`run_context`), so
every line logged inside it, down to the engine's and the Slack client's, carries them;
bot.ops.logs puts them in each JSON line. The replica is one per process.
"""

from __future__ import annotations

import contextvars
import os
import socket

__all__ = ["RUN_ID", "TEAM_ID", "fields", "replica", "run_context", "set_replica"]

RUN_ID: contextvars.ContextVar[int | None] = contextvars.ContextVar("rlm_run_id", default=None)
TEAM_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("rlm_team_id", default=None)

# Until replicas share Redis (which names each), the host and process name this one.
_replica = f"{socket.gethostname()}:{os.getpid()}"


def set_replica(replica_id: str) -> None:
    """Name this process in every log line from now on (its id among the replicas)."""
    global _replica
    _replica = replica_id


def replica() -> str:
    return _replica


def fields() -> dict[str, object]:
    """What the current context says a log line is about: run, workspace, replica."""
    out: dict[str, object] = {"replica": _replica}
    run_id, team_id = RUN_ID.get(), TEAM_ID.get()
    if run_id is not None:
        out["run_id"] = run_id
    if team_id is not None:
        out["team_id"] = team_id
    return out


def run_context(run_id: int, team_id: str) -> contextvars.Context:
    """A copy of the current context in which the run and its workspace are set: give it to
    `asyncio.create_task(..., context=...)` and everything the task logs says so."""
    ctx = contextvars.copy_context()
    ctx.run(RUN_ID.set, run_id)
    ctx.run(TEAM_ID.set, team_id)
    return ctx
