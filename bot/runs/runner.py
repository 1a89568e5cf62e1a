"""Running one question: queue per workspace, gather context, run the engine, record.

Each workspace (`team_id`) has one sub-call limiter shared by all its runs, and a cap on runs
at once; a run beyond the cap waits its turn. A run is capped by the per-run budgets and what
is left of its workspace's daily tokens; one a budget stops answers with the best it has and
says which limit stopped it. The runner gathers, thinks and records; everything the run shows
in Slack goes through its `RunPresence` (bot/presence/run.py). A run in progress can be cancelled
(`Runner.cancel`), and a question in a run's thread keeps that run's scope.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError

from bot.gather.context import ContextGatherer, GatheredContext
from bot.presence.pacer import ChannelPacer
from bot.presence.pane import PanePresence
from bot.presence.run import RunPresence, StreamSupport
from bot.runs.admission import NotTaken, admit
from bot.runs.budgets import BudgetBook, RunCaps
from bot.runs.ends import RunEnds, describe, tell_operator
from bot.runs.keeping import RunKeeper, database_away
from bot.runs.problems import record_operator_problem
from bot.runs.question import EngineConfig, Question, StopFlag
from bot.runs.slots import RunSlots
from bot.runs.thinking import think
from bot.slack import messages
from bot.slack.admins import tell_if_admin
from bot.slack.api import SlackPoster, error_code, explain
from bot.storage import Fence, RunRecord, Store
from bot.telemetry.runs import counts_in_flight
from bot.telemetry.spans import start_run
from rlm import (
    KeyedLimiter,
)

if TYPE_CHECKING:  # redis is an optional extra
    from bot.runs.queue import SharedRunQueue
    from bot.runs.shared_limits import SharedKeyedLimiter

logger = logging.getLogger("bot.runner")


@dataclass
class _Active:
    """A run in progress: its work, its presence, who may cancel it."""

    task: asyncio.Task[None]
    presence: RunPresence
    asker: str
    cancelled_by: str | None = None
    lost: bool = False  # another replica marked it interrupted: stop, show nothing more


class Runner:
    def __init__(
        self,
        *,
        engine: EngineConfig,
        budget: BudgetBook,
        store: Store,
        poster: SlackPoster,
        gatherer: ContextGatherer,
        pacer: ChannelPacer,
        limiters: KeyedLimiter | SharedKeyedLimiter,
        slots: RunSlots,
        edit_interval: float = 1.2,
        wait_notice: float = 10.0,
        owner: str | None = None,
        queue: SharedRunQueue | None = None,
        stop: StopFlag | None = None,
        keeper: RunKeeper | None = None,
    ) -> None:
        """`edit_interval`: least seconds between edits of a status message, and of any
        status message in one workspace; `wait_notice`: the model's silence, in seconds,
        after which the status says it is waiting."""
        self.engine = engine
        self.budget = budget
        self.store = store
        self.poster = poster
        self.gatherer = gatherer
        self.pacer = pacer
        self.limiters = limiters
        self.slots = slots
        self.edit_interval = edit_interval
        self.wait_notice = wait_notice
        self.edit_pacer = ChannelPacer(edit_interval)  # keyed by workspace
        self.streams = StreamSupport()
        self.active: dict[int, _Active] = {}
        self.owner = owner  # this replica's id, stamped on the runs it takes
        # The runs this process holds, their leases and durable ends: one per process.
        self.keeper = keeper or RunKeeper(store, owner=owner)
        self.ends = RunEnds(store=store, poster=poster, keeper=self.keeper)
        self.queue = queue  # replicas: the queue in the database they all take runs from
        # Set at shutdown: runs still waiting their turn do not start. Shared by the runners
        # of every workspace in the process.
        self.stop = stop or StopFlag()

    @property
    def stopping(self) -> bool:
        return self.stop.stopping

    @stopping.setter
    def stopping(self, value: bool) -> None:
        self.stop.stopping = value

    async def recover(
        self,
        owners: Iterable[str | None] | None = None,
        statuses: Iterable[str] = ("queued", "running"),
    ) -> int:
        """Mark runs a crash left unfinished as interrupted (all, or those of `owners`) and
        tell their threads; a run another replica marked first is left to it."""
        return await self.ends.recover(owners, statuses)

    async def cancel(self, run_id: int, user_id: str) -> bool:
        """Stop a run in progress now (its sub-calls in flight are abandoned) and say so;
        False if it is not running in this process or has already ended."""
        entry = self.active.get(run_id)
        if entry is None or entry.cancelled_by is not None or entry.presence.ended:
            return False
        entry.cancelled_by = user_id
        entry.task.cancel()
        await entry.presence.cancelled(user_id)
        logger.info("run %d cancelled by %s", run_id, user_id)
        return True

    def lose(self, run_id: int) -> None:
        """The run's lease ran out and another replica marked it interrupted (and told its
        thread): stop its work here without a word more."""
        entry = self.active.get(run_id)
        if entry is not None and not entry.lost:
            entry.lost = True
            entry.task.cancel()
            logger.warning("run %d: lost its lease to another replica; stopped here", run_id)

    async def admit(self, q: Question) -> int | str:
        """Store the question as a queued run before anything is posted: its id, or what a
        budget says in refusing it; NotTaken if it cannot be stored now."""
        return await admit(self, q)

    async def ask(self, question: Question, admitted: int | str | None = None) -> int | None:
        """Run `question` to the end: stored first by `admit` (unless `admitted` is what it
        gave), then echoed and run; returns the run id (None if no run was started)."""
        q = question
        if admitted is None:
            try:
                admitted = await self.admit(q)
            except NotTaken as exc:
                logger.warning(
                    "a question in %s/%s was not taken: %s", q.team_id, q.channel_id, exc
                )
                admitted = messages.NOT_TAKEN
        if isinstance(admitted, str):  # refused, or not taken: the asker is told, once
            refusal = admitted
            if q.thread_ts is None:  # a slash command: only the asker hears of it
                await self.poster.tell_user(
                    q.channel_id, q.user_id, refusal, response_url=q.response_url
                )
            else:
                await self.poster.try_post(q.channel_id, refusal, thread_ts=q.thread_ts)
            if refusal == messages.DAILY_LIMIT_REACHED:  # an admin is told the setting too
                await tell_if_admin(
                    self.poster,
                    q.channel_id,
                    q.user_id,
                    self.budget.admin_note("daily_tokens"),
                    response_url=q.response_url,
                )
            return None
        run_id = admitted
        thread_ts = q.thread_ts
        if thread_ts is None:  # stored first: now the question is echoed, the thread's root
            try:
                thread_ts = await self.poster.post(
                    q.channel_id, messages.question_root(q.user_id, q.text)
                )
            except SlackApiError as exc:
                await self.ends.fail(run_id, f"slack: {error_code(exc)}", error_kind="user:slack")
                await self.poster.tell_user(
                    q.channel_id,
                    q.user_id,
                    explain("chat.postMessage", exc),
                    response_url=q.response_url,
                )
                return None
            await self.keeper.retrying(lambda: self.store.set_run_thread(run_id, thread_ts))
        # A question in a run's thread keeps that run's scope and reads its earlier answers.
        earlier = await self.store.thread_runs(q.team_id, q.channel_id, thread_ts)
        earlier = [r for r in earlier if r.id != run_id]
        scope = (earlier[0].scope if earlier else None) or q.scope
        logger.info(
            "run %d queued in %s/%s (%s%s)",
            run_id,
            q.team_id,
            q.channel_id,
            q.trigger,
            f", retry of run {q.retry_of}" if q.retry_of else "",
        )
        presence = self._presence(run_id, q, thread_ts)
        if self.queue is not None:  # replicas: whichever has room starts it
            await self.queue.submit(
                run_id, q, lambda ahead: presence.queued(ahead, self.slots.limit)
            )
            return run_id
        await self._guarded(
            run_id, q, presence, lambda: self._queue_and_run(run_id, q, scope, earlier, presence)
        )
        return run_id

    async def run_claimed(
        self, run_id: int, q: Question, thread_ts: str, fence: Fence | None = None
    ) -> None:
        """Run a queued run this replica claimed from the shared queue (marked running, the
        claim's `fence`): its status message, if the replica that queued it posted one, is
        edited from here."""
        if fence is not None:
            self.keeper.hold(run_id, fence)
        run = await self.store.get_run(run_id)
        earlier = await self.store.thread_runs(q.team_id, q.channel_id, thread_ts)
        scope = (run.scope if run is not None else None) or q.scope
        presence = self._presence(run_id, q, thread_ts)
        presence.status_ts = run.status_ts if run is not None else None
        await self._guarded(
            run_id, q, presence, lambda: self._run(run_id, q, scope, earlier, presence)
        )

    def _presence(self, run_id: int, q: Question, thread_ts: str) -> RunPresence:
        kind = PanePresence if q.progress == "pane" else RunPresence
        return kind(
            client=self.poster.client,
            pacer=self.pacer,
            edit_pacer=self.edit_pacer,
            channel=q.channel_id,
            thread_ts=thread_ts,
            run_id=run_id,
            team_id=q.team_id,
            asker=q.user_id,
            edit_interval=self.edit_interval,
            streams=self.streams,
            wait_notice=self.wait_notice,
            tick=max(0.1, min(5.0, self.wait_notice / 2)),
            on_status_posted=lambda ts: self._remember_status(run_id, ts),
        )

    async def _remember_status(self, run_id: int, ts: str) -> None:
        """Keep the status message's ts (recovery edits it); a database away costs only that."""
        try:
            await self.store.set_status_message(run_id, ts)
        except Exception as exc:
            if not database_away(exc):
                raise
            logger.warning("run %d: status message not remembered: %s", run_id, exc)

    async def _guarded(
        self,
        run_id: int,
        q: Question,
        presence: RunPresence,
        work: Callable[[], Coroutine[Any, Any, None]],
    ) -> None:
        """Do `work` for the run as a task Cancel can stop; however it ends, the run is
        stored as ended and its status says so."""
        task = start_run(work(), run_id=run_id, team_id=q.team_id)  # its logs name it
        entry = self.active[run_id] = _Active(task, presence, q.user_id)
        try:
            await task
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if entry.lost and not (me is not None and me.cancelling()):
                await presence.close()  # whoever marked it told the thread
                return
            if entry.cancelled_by is None or (me is not None and me.cancelling()):
                task.cancel()
                await presence.close()
                await asyncio.shield(self.ends.interrupted(run_id, presence.failed))
                raise
            await self.ends.fail(
                run_id,
                f"cancelled by {entry.cancelled_by}",
                status="stopped",
                error_kind="user:cancelled",
            )
        except Exception as exc:  # anything unforeseen still ends the run, stored and told
            logger.exception("run %d failed", run_id)
            try:
                shown = await self.ends.fail(run_id, describe(exc), error_kind="internal")
            except Exception:
                logger.exception("could not mark run %d failed", run_id)
                shown = True
            if shown:
                await presence.failed(messages.CRASHED)
        finally:
            self.active.pop(run_id, None)
            self.keeper.release(run_id)

    async def _queue_and_run(
        self,
        run_id: int,
        q: Question,
        scope: str,
        earlier: list[RunRecord],
        presence: RunPresence,
    ) -> None:
        async def say_queued(ahead: int) -> None:
            await presence.queued(ahead, self.slots.limit)

        async with self.slots.turn(q.team_id, say_queued):
            if self.stopping:  # its turn came during shutdown: too late to start it
                await self.ends.interrupted(run_id, presence.failed)
                return
            fence = await self.keeper.retrying(
                lambda: self.store.start_run(run_id, self.owner, self.keeper.lease_seconds)
            )
            if fence is None:  # no longer queued (marked interrupted meanwhile)
                return
            self.keeper.hold(run_id, fence)
            await self._run(run_id, q, scope, earlier, presence)

    @counts_in_flight
    async def _run(
        self,
        run_id: int,
        q: Question,
        scope: str,
        earlier: list[RunRecord],
        presence: RunPresence,
    ) -> None:
        try:
            gathered = await self._gather(q, scope, presence.thread_ts, follow_up=bool(earlier))
        except SlackApiError as exc:
            await record_operator_problem(self.store, q.team_id, exc)
            code = error_code(exc)
            if code == "missing_scope":
                needed = str(exc.response.get("needed") or "unknown")
                tell_operator(run_id, "operator:missing_scope", f"needs {needed}")
                if await self.ends.fail(
                    run_id, f"slack: {code} {needed}", error_kind="operator:missing_scope"
                ):
                    await presence.failed(messages.MISSING_SCOPE_FOR_USER)
            else:
                why = explain("conversations.history", exc)
                if await self.ends.fail(run_id, f"slack: {code}", error_kind="user:slack"):
                    await presence.failed(messages.cannot_read_context(why))
            return
        if gathered.empty:
            if await self.ends.fail(run_id, "nothing to read", error_kind="user:empty"):
                await presence.failed(
                    messages.EMPTY_THREAD if scope == "thread" else messages.EMPTY_CHANNEL,
                    retry=False,  # a notice, not a failure: nothing to retry or show
                )
            return
        self.gatherer.add_earlier_answers(gathered, [r for r in earlier if r.id != run_id])
        for source in gathered.sources:
            await self.keeper.retrying(
                lambda source=source: self.store.add_context_source(  # type: ignore[misc]
                    run_id, kind=source.kind, ref=source.ref, items=source.items, chars=source.chars
                )
            )
        await presence.reading(gathered.summary())
        caps = await self.budget.caps(q.team_id)
        if caps is None:  # the day's tokens or money ran out while this run waited its turn
            said = await self.budget.refusal(q.team_id) or messages.DAILY_LIMIT_REACHED
            money = said == messages.DAILY_SPEND_USED
            error = "daily money budget used up" if money else "daily token budget used up"
            if await self.ends.fail(run_id, error, error_kind="user:daily_budget"):
                await presence.failed(said, retry=False)
                if not money:
                    await tell_if_admin(
                        self.poster,
                        q.channel_id,
                        q.user_id,
                        self.budget.admin_note("daily_tokens"),
                    )
            return
        await self._think(run_id, q, presence, gathered, caps)

    async def _think(
        self,
        run_id: int,
        q: Question,
        presence: RunPresence,
        gathered: GatheredContext,
        caps: RunCaps,
    ) -> None:
        await think(
            run_id=run_id,
            q=q,
            presence=presence,
            gathered=gathered,
            caps=caps,
            engine=self.engine,
            limiter=self.limiters.get(q.team_id),
            store=self.store,
            ends=self.ends,
            budget=self.budget,
        )

    async def _gather(
        self, q: Question, scope: str, thread_ts: str, *, follow_up: bool
    ) -> GatheredContext:
        bot = await self.poster.identity()
        if scope == "thread":
            return await self.gatherer.thread(
                q.team_id,
                q.channel_id,
                thread_ts,
                exclude_ts=q.exclude_ts,
                bot=bot,
                skip_bot=follow_up,
            )
        pane = (q.channel_id, thread_ts) if q.context_channel_id else None
        return await self.gatherer.channel(
            q.team_id,
            q.context_channel_id or q.channel_id,
            bot=bot,
            exclude_ts=q.exclude_ts,
            pane=pane,
        )
