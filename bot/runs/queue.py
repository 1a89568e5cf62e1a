"""The run queue replicas share: queued runs wait in the database, and whichever replica has
room under the workspace's run cap (held in Redis) claims the oldest and runs it.

A replica tries to start runs when it queues one, when one of its runs ends, and every
`poll_seconds` (which also picks up the room a dead replica's expired leases leave). A
claim is a slot taken in Redis and then a conditional UPDATE of the oldest queued run, so
each run is started by exactly one replica; a slot taken with nothing left to claim goes
straight back. A stopping replica claims nothing more, leaving its queued runs to the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from bot.runs.keeping import OutageLog
from bot.runs.question import Question
from bot.storage import Fence, RunRecord, Store

if TYPE_CHECKING:
    from bot.runs.shared_limits import SharedLimits

logger = logging.getLogger("bot.run_queue")

Spawn = Callable[[Coroutine[Any, Any, Any], str], "asyncio.Task[Any]"]


def question_of(run: RunRecord) -> Question:
    """The question a queued run answers, as any replica can rebuild it from its row."""
    return Question(
        team_id=run.team_id,
        channel_id=run.channel_id,
        user_id=run.user_id,
        text=run.question,
        trigger="mention" if run.trigger == "mention" else "command",
        scope="thread" if run.scope == "thread" else "channel",
        thread_ts=run.thread_ts,
        exclude_ts=tuple(ts for ts in (run.exclude_ts or "").split(",") if ts),
    )


class Runner(Protocol):
    """What the queue needs of `bot.runs.runner.Runner` (declared here: the runner imports
    this module, not the other way round)."""

    stopping: bool

    async def run_claimed(
        self, run_id: int, q: Question, thread_ts: str, fence: Fence | None = None
    ) -> None: ...


def _no_spawn(work: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
    raise RuntimeError("SharedRunQueue.spawn was not set")


class SharedRunQueue:
    """Starts queued runs on this replica while their workspace has room on all of them."""

    def __init__(
        self,
        *,
        store: Store,
        limits: SharedLimits,
        limit: int,
        spawn: Spawn | None = None,
        poll_seconds: float = 0.5,
        lease_seconds: float | None = None,
    ) -> None:
        self.store = store
        self.limits = limits
        self.limit = limit
        self.spawn: Spawn = spawn or _no_spawn  # set with the services that keep the tasks
        self.poll_seconds = poll_seconds
        self.lease_seconds = lease_seconds  # how long a claimed run's lease lasts unrenewed
        self.outage = OutageLog("the run queue (database or Redis)", logger)
        self.runner: Runner | None = None  # set once the runner exists
        # The runner for a workspace's run (its own token and settings); default: `runner`.
        self.runner_for: Callable[[str], Coroutine[Any, Any, Runner]] | None = None
        self._filling: dict[str, asyncio.Lock] = {}

    @property
    def stopping(self) -> bool:
        return self.runner is None or self.runner.stopping

    async def submit(
        self,
        run_id: int,
        question: Question,
        say_queued: Callable[[int], Coroutine[Any, Any, None]],
    ) -> None:
        """Start the queued run `run_id` here if its workspace has room; else say it waits
        (`say_queued(runs ahead)`)."""
        started = await self.fill(question.team_id, mine=(run_id, question))
        if started:
            return
        run = await self.store.get_run(run_id)
        if run is not None and run.status == "queued":
            ahead = await self.store.runs_ahead(question.team_id, run_id)
            await say_queued(ahead)

    async def fill(self, team_id: str, mine: tuple[int, Question] | None = None) -> bool:
        """Claim and start the workspace's queued runs while it has room; True if the run
        of `mine` was among them (it keeps the question as asked, response URL and all)."""
        started_mine = False
        lock = self._filling.setdefault(team_id, asyncio.Lock())
        async with lock:
            slot = self.limits.semaphore(f"runs:{team_id}", self.limit)
            while not self.stopping:
                token = await slot.try_acquire()
                if token is None:
                    break
                try:
                    assert self.limits.replica_id
                    run = await self.store.claim_queued_run(
                        team_id, self.limits.replica_id, self.lease_seconds
                    )
                except BaseException:
                    await asyncio.shield(slot.release(token))
                    raise
                if run is None:
                    await slot.release(token)
                    break
                question = question_of(run)
                if mine is not None and run.id == mine[0]:
                    question, started_mine = mine[1], True
                self.spawn(self._execute(run, question, token), f"run {run.id}")
        return started_mine

    async def _execute(self, run: RunRecord, question: Question, token: str) -> None:
        assert self.runner is not None and run.thread_ts is not None
        slot = self.limits.semaphore(f"runs:{run.team_id}", self.limit)
        try:
            runner = self.runner if self.runner_for is None else await self.runner_for(run.team_id)
            await runner.run_claimed(run.id, question, run.thread_ts, run.fence)
        finally:
            await asyncio.shield(slot.release(token))
            if not self.stopping:  # the room this run leaves, for the next one
                self.spawn(self.fill(run.team_id), f"fill {run.team_id}")

    async def watch(self) -> None:
        """Until cancelled: start what waits wherever this replica finds room."""
        while True:
            await asyncio.sleep(self.poll_seconds)
            if self.stopping:
                continue
            try:
                for team_id in await self.store.queued_teams():
                    await self.fill(team_id)
            except Exception as exc:  # the database or Redis is away for a moment
                self.outage.failed(exc)
            else:
                self.outage.ok()
