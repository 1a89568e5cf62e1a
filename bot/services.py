"""`Services`: everything the listeners hand work to, built once per process.

The listeners import it from here, and `bot.app` builds it (`start_services`), so no
listener imports the module that registers it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_bolt.async_app import AsyncBoltContext

from bot.gather.context import ContextGatherer
from bot.gather.uploads import Uploads
from bot.ops.housekeeping import Housekeeping
from bot.runs.runner import Runner
from bot.settings import Settings
from bot.slack.api import SlackPoster
from bot.storage import Store
from bot.workspaces.installs import OAuth, Uninstaller
from bot.workspaces.tenants import Tenants, Workspace
from rlm import KeyedLimiter, LLMInterface

if TYPE_CHECKING:  # redis is an optional extra, imported only when REDIS_URL is set
    from bot.runs.shared_limits import SharedKeyedLimiter, SharedLimits

__all__ = ["Services"]

logger = logging.getLogger("bot.app")


@dataclass
class Services:
    """Everything the listeners hand work to, built once per process."""

    settings: Settings
    store: Store
    session: aiohttp.ClientSession
    poster: SlackPoster
    gatherer: ContextGatherer
    uploads: Uploads
    runner: Runner
    llms: tuple[LLMInterface, ...]
    isolation: str = "none"  # the REPL sandbox method runs use
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    # Many workspaces: per-workspace clients and settings, OAuth (None: one bot token).
    tenants: Tenants | None = None
    uninstaller: Uninstaller | None = None
    oauth: OAuth | None = None

    async def workspace(self, team_id: str, context: AsyncBoltContext | None) -> Workspace:
        """What a request from `team_id` is handled with: its own token and settings."""
        assert self.tenants is not None
        if context is None:
            return await self.tenants.workspace(team_id)
        return await self.tenants.workspace(team_id, context.client, context.enterprise_id)

    def spawn_run(
        self,
        work: Coroutine[Any, Any, Any],
        name: str,
        team_id: str,
        context: AsyncBoltContext | None = None,
    ) -> asyncio.Task[Any]:
        """`spawn`, noting the task as one of `team_id`'s runs so an uninstall can stop it."""
        task = self.spawn(work, name)
        if self.tenants is not None:
            enterprise = context.enterprise_id if context is not None else None
            self.tenants.track(team_id, task, enterprise)
        return task

    async def claimed(self, body: dict[str, Any]) -> bool:
        """Whether this delivery of an event is the first: a retry (X-Slack-Retry-Num)
        repeats its event_id, and only the first counts."""
        event_id = body.get("event_id")
        return not event_id or await self.store.claim_event(str(event_id))

    async def runner_for(self, team_id: str) -> Runner:
        """The runner for a run of `team_id` no request carries (a queued run this replica
        claimed): the workspace's own token and settings."""
        if self.tenants is None:
            return self.runner
        client = await self.tenants.client_for(team_id, self.oauth)
        return (await self.tenants.workspace(team_id, client)).runner

    housekeeping: Housekeeping | None = None  # the retention purge, started with the services
    limits: SharedLimits | None = None  # with REDIS_URL: the caps every replica shares
    watchers: list[asyncio.Task[None]] = field(default_factory=list)  # replicas' sweeps

    @property
    def limiters(self) -> KeyedLimiter | SharedKeyedLimiter:
        return self.runner.limiters

    def spawn(self, work: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run `work` after the ack; kept here so shutdown (and tests) can wait for it."""
        task = asyncio.create_task(work, name=name)
        self.tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("%s failed", task.get_name(), exc_info=task.exception())

    async def drain(self) -> None:
        """Wait until no background work is left, including work that work started."""
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)

    async def finish(self, grace: float) -> int:
        """Stop starting runs and give those under way up to `grace` seconds to end; returns
        how many tasks are still going (`close()` then interrupts them)."""
        self.runner.stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.tasks and loop.time() < deadline:
            await asyncio.wait(list(self.tasks), timeout=deadline - loop.time())
        return len(self.tasks)

    async def close(self) -> None:
        if self.housekeeping is not None:
            await self.housekeeping.stop()
        self.runner.stopping = True  # nothing new starts while the rest is cancelled
        for task in list(self.tasks):
            task.cancel()
        await self.drain()
        for watcher in self.watchers:
            watcher.cancel()
        await asyncio.gather(*self.watchers, return_exceptions=True)
        if self.uninstaller is not None:
            await self.uninstaller.close()
        if self.tenants is not None:
            await self.tenants.close()
        await self.uploads.close()
        for llm in self.llms:
            await llm.aclose()
        await self.session.close()
        await self.runner.keeper.close()  # ends kept through a database outage, last try
        if self.limits is not None:
            await self.limits.close()
        await self.store.close()
