"""Running one question: queue per workspace, gather context, run the engine, report, store.

Each workspace (`team_id`) has one sub-call limiter shared by all its runs, and a cap on runs
at once; a run beyond the cap waits its turn and says so in its thread. A run is capped by the
per-run budgets and what is left of its workspace's daily tokens; one a budget stops answers
with the best it has and says which limit stopped it. Every iteration is stored as it
finishes; every way a run can end is stored and told in its thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from slack_sdk.errors import SlackApiError

from bot import messages
from bot.budgets import BudgetBook, RunCaps
from bot.context import ContextGatherer, GatheredContext
from bot.progress import ChannelPacer, ProgressReporter
from bot.slack_api import SlackPoster, explain
from bot.slots import RunSlots
from bot.storage import Store
from rlm import (
    RLM,
    Event,
    IterationFinished,
    KeyedLimiter,
    LLMInterface,
    ProviderError,
    RunFinished,
    SandboxLimits,
)

if TYPE_CHECKING:  # redis is an optional extra
    from bot.run_queue import SharedRunQueue
    from bot.shared_limits import SharedKeyedLimiter

logger = logging.getLogger("bot.runner")

INTERRUPT_NOTICE_SECONDS = 5.0
# Past its time budget the engine still asks the root model for a best answer; a run not
# ended one provider timeout plus this slack (at most the budget itself) later is stopped.
DEADLINE_SLACK_SECONDS = 5.0


@dataclass(frozen=True)
class Question:
    """A question as the listeners hand it over."""

    team_id: str
    channel_id: str
    user_id: str
    text: str
    trigger: Literal["command", "mention"]
    scope: Literal["channel", "thread"]
    # Where to answer; None for a slash command, whose question is posted first.
    thread_ts: str | None = None
    # Messages to leave out of the context (the mention itself).
    exclude_ts: tuple[str, ...] = ()
    response_url: str | None = None


@dataclass(frozen=True)
class EngineConfig:
    root_llm: LLMInterface
    sub_llm: LLMInterface
    root_model: str
    sub_model: str
    prompt_mode: Literal["standard", "conservative", "no_subcalls"] = "standard"
    sandbox_limits: SandboxLimits = field(default_factory=SandboxLimits)
    provider_timeout: float = 120.0
    max_map_chunks: int = 10_000  # chunks in one parallel_query
    max_prompt_bytes: int = 64 * 1024 * 1024  # one llm_query prompt, or one map's prompts


@dataclass
class _Totals:
    iterations: int = 0
    subcalls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    seconds: float = 0.0
    stopped_by: str | None = None
    finished: RunFinished | None = field(default=None, repr=False)

    def add(self, event: IterationFinished) -> None:
        self.iterations = max(self.iterations, event.iteration)
        self.subcalls += event.subcalls
        self.input_tokens += event.input_tokens
        self.output_tokens += event.output_tokens
        self.seconds += event.seconds

    def end(self, event: RunFinished) -> None:
        self.finished = event
        self.iterations, self.subcalls = event.iterations, event.subcalls
        self.input_tokens, self.output_tokens = event.input_tokens, event.output_tokens
        self.seconds, self.stopped_by = event.seconds, event.stopped_by


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
        owner: str | None = None,
        queue: SharedRunQueue | None = None,
    ) -> None:
        self.engine = engine
        self.budget = budget
        self.store = store
        self.poster = poster
        self.gatherer = gatherer
        self.pacer = pacer
        self.limiters = limiters
        self.slots = slots
        self.owner = owner  # this replica's id, stamped on the runs it takes
        self.stopping = False  # set at shutdown: runs still waiting their turn do not start
        self.queue = queue  # replicas: the queue in the database they all take runs from

    async def recover(
        self,
        owners: Iterable[str | None] | None = None,
        statuses: Iterable[str] = ("queued", "running"),
    ) -> int:
        """Mark runs a crash left unfinished as interrupted (all, or those of `owners`) and
        tell their threads; a run another replica marked first is left to it."""
        runs = await self.store.mark_interrupted_runs(owners, statuses)
        for run in runs:
            logger.info("run %d was left unfinished by a stopped process: interrupted", run.id)
            if run.thread_ts:
                await self.poster.try_post(
                    run.channel_id, messages.INTERRUPTED, thread_ts=run.thread_ts
                )
        return len(runs)

    async def ask(self, question: Question) -> int | None:
        """Run `question` to the end; returns the run id (None if no run was started)."""
        q = question
        refusal = await self.budget.refusal(q.team_id)
        if refusal is not None:
            if q.thread_ts is None:  # a slash command: only the asker hears of it
                await self.poster.tell_user(
                    q.channel_id, q.user_id, refusal, response_url=q.response_url
                )
            else:
                await self.poster.try_post(q.channel_id, refusal, thread_ts=q.thread_ts)
            return None
        thread_ts = q.thread_ts
        if thread_ts is None:
            try:
                thread_ts = await self.poster.post(
                    q.channel_id, messages.question_root(q.user_id, q.text)
                )
            except SlackApiError as exc:
                await self.poster.tell_user(
                    q.channel_id,
                    q.user_id,
                    explain("chat.postMessage", exc),
                    response_url=q.response_url,
                )
                return None
        run_id = await self.store.create_run(
            team_id=q.team_id,
            channel_id=q.channel_id,
            thread_ts=thread_ts,
            user_id=q.user_id,
            question=q.text,
            root_model=self.engine.root_model,
            sub_model=self.engine.sub_model,
            trigger=q.trigger,
            owner=self.owner if self.queue is None else None,  # a shared one: its claimer
            scope=q.scope,
            exclude_ts=",".join(q.exclude_ts) or None,
        )
        logger.info("run %d queued in %s/%s (%s)", run_id, q.team_id, q.channel_id, q.trigger)
        reporter = ProgressReporter(
            poster=self.poster, pacer=self.pacer, channel=q.channel_id, thread_ts=thread_ts
        )
        if self.queue is not None:  # replicas: whichever has room starts it
            await self.queue.submit(run_id, q, reporter)
            return run_id

        async def say_queued(ahead: int) -> None:
            await reporter.say(messages.queued(ahead, self.slots.limit))

        async def take_turn() -> None:
            async with self.slots.turn(q.team_id, say_queued):
                if self.stopping:  # its turn came during shutdown: too late to start it
                    await self._interrupted(run_id, q.channel_id, reporter.thread_ts)
                    return
                await self.store.set_run_status(run_id, "running")
                await self._run(run_id, q, reporter)

        await self._guarded(run_id, reporter, take_turn)
        return run_id

    async def run_claimed(self, run_id: int, q: Question, thread_ts: str) -> None:
        """Run a queued run this replica claimed from the shared queue (marked running)."""
        reporter = ProgressReporter(
            poster=self.poster, pacer=self.pacer, channel=q.channel_id, thread_ts=thread_ts
        )
        await self._guarded(run_id, reporter, lambda: self._run(run_id, q, reporter))

    async def _guarded(
        self, run_id: int, reporter: ProgressReporter, work: Callable[[], Awaitable[None]]
    ) -> None:
        """Do `work` for the run; however it ends, the run is stored as ended and told."""
        try:
            await work()
        except asyncio.CancelledError:
            reporter.cancel()
            await asyncio.shield(self._interrupted(run_id, reporter.channel, reporter.thread_ts))
            raise
        except Exception as exc:  # anything unforeseen still ends the run, told and stored
            logger.exception("run %d failed", run_id)
            await reporter.say(messages.run_crashed(run_id))
            try:
                await self._fail(run_id, _describe(exc))
            except Exception:
                logger.exception("could not mark run %d failed", run_id)

    async def _run(self, run_id: int, q: Question, reporter: ProgressReporter) -> None:
        try:
            gathered = await self._gather(q, reporter.thread_ts)
        except SlackApiError as exc:
            why = explain("conversations.history", exc)
            await reporter.say(messages.cannot_read_context(why))
            await self.poster.tell_user(q.channel_id, q.user_id, why, response_url=q.response_url)
            await self._fail(run_id, f"slack: {exc.response.get('error')}")
            return
        if gathered.empty:
            await reporter.say(
                messages.EMPTY_THREAD if q.scope == "thread" else messages.EMPTY_CHANNEL
            )
            await self._fail(run_id, "nothing to read")
            return
        for source in gathered.sources:
            await self.store.add_context_source(
                run_id, kind=source.kind, ref=source.ref, items=source.items, chars=source.chars
            )
        reporter.note(
            "reading", messages.reading(gathered.messages, gathered.files, gathered.chars)
        )
        caps = await self.budget.caps(q.team_id)
        if caps is None:  # the day's tokens ran out while this run waited its turn
            await reporter.say(messages.daily_budget_used(*await self._daily_use(q.team_id)))
            await self._fail(run_id, "daily token budget used up")
            return
        await self._think(run_id, q, reporter, gathered, caps)

    async def _think(
        self,
        run_id: int,
        q: Question,
        reporter: ProgressReporter,
        gathered: GatheredContext,
        caps: RunCaps,
    ) -> None:
        totals = _Totals()

        async def on_event(event: Event) -> None:
            reporter.on_event(event)
            if isinstance(event, IterationFinished):
                totals.add(event)
                await self.store.record_iteration(
                    run_id,
                    iteration=event.iteration,
                    root_reply=event.root_reply,
                    code="\n\n".join(event.code_blocks),
                    output="\n\n".join(event.outputs),
                    subcalls=event.subcalls,
                    input_tokens=event.input_tokens,
                    output_tokens=event.output_tokens,
                    seconds=event.seconds,
                )
            elif isinstance(event, RunFinished):
                totals.end(event)

        engine = RLM(
            root_llm=self.engine.root_llm,
            sub_llm=self.engine.sub_llm,
            prompt_mode=self.engine.prompt_mode,
            max_iterations=caps.max_iterations,
            max_subcalls=caps.max_subcalls,
            max_tokens=caps.max_tokens,
            max_seconds=caps.max_seconds,
            max_map_chunks=self.engine.max_map_chunks,
            max_prompt_bytes=self.engine.max_prompt_bytes,
            sandbox_limits=self.engine.sandbox_limits,
            limiter=self.limiters.get(q.team_id),
            on_event=on_event,
        )
        deadline = None
        if caps.max_seconds is not None:
            slack = min(DEADLINE_SLACK_SECONDS, caps.max_seconds)
            deadline = caps.max_seconds + self.engine.provider_timeout + slack
        logger.info("run %d running over %d chars", run_id, gathered.chars)
        timer = asyncio.timeout(deadline)
        try:
            async with timer:
                answer, _ = await engine.query_async(q.text, gathered.documents)
        except ProviderError as exc:
            logger.warning("run %d: provider failed: %s", run_id, exc)
            await reporter.say(messages.provider_failed(_clip(str(exc), 200)))
            await self._fail(run_id, f"provider: {_clip(str(exc), 500)}", totals)
            return
        except Exception as exc:
            if isinstance(exc, TimeoutError) and timer.expired():
                logger.warning("run %d: no answer within its time budget; stopped", run_id)
                await reporter.say(messages.out_of_time(caps.max_seconds or 0.0))
                await self._fail(run_id, "time budget", totals, stopped_by="max_seconds")
            else:
                logger.exception("run %d failed", run_id)
                await reporter.say(messages.run_crashed(run_id))
                await self._fail(run_id, _describe(exc), totals)
            return
        text = answer.strip() or messages.EMPTY_ANSWER
        if totals.stopped_by:
            text += "\n\n" + self.budget.stopped_by(totals.stopped_by, caps)
        footer = messages.answer_footer(
            iterations=totals.iterations,
            subcalls=totals.subcalls,
            tokens=totals.input_tokens + totals.output_tokens,
            seconds=totals.seconds,
            run_id=run_id,
        )
        await reporter.answer(text, footer)
        await self._record_end(
            run_id, "finished", totals, answer=answer, stopped_by=totals.stopped_by
        )
        logger.info(
            "run %d finished: %d iterations, %d sub-calls, %.1f s%s",
            run_id,
            totals.iterations,
            totals.subcalls,
            totals.seconds,
            f", stopped by {totals.stopped_by}" if totals.stopped_by else "",
        )

    async def _daily_use(self, team_id: str) -> tuple[int, int]:
        return await self.budget.tokens_today(team_id), self.budget.budgets.daily_tokens

    async def _gather(self, q: Question, thread_ts: str) -> GatheredContext:
        if q.scope == "thread":
            return await self.gatherer.thread(
                q.team_id, q.channel_id, thread_ts, exclude_ts=q.exclude_ts
            )
        bot = await self.poster.identity()
        return await self.gatherer.channel(
            q.team_id, q.channel_id, bot=bot, exclude_ts=q.exclude_ts
        )

    async def _fail(
        self,
        run_id: int,
        error: str,
        totals: _Totals | None = None,
        *,
        stopped_by: str | None = None,
    ) -> None:
        """Mark the run failed, with `totals`, or else the totals its stored iterations give."""
        if totals is None:
            run = await self.store.get_run(run_id)
            totals = _Totals()
            if run is not None:
                totals.iterations, totals.subcalls = run.iterations, run.subcalls
                totals.input_tokens, totals.output_tokens = run.input_tokens, run.output_tokens
                totals.seconds = run.seconds
        await self._record_end(run_id, "failed", totals, error=error, stopped_by=stopped_by)

    async def _record_end(
        self,
        run_id: int,
        status: str,
        totals: _Totals,
        *,
        answer: str | None = None,
        error: str | None = None,
        stopped_by: str | None = None,
    ) -> None:
        await self.store.finish_run(
            run_id,
            status=status,
            answer=answer,
            error=error,
            iterations=totals.iterations,
            subcalls=totals.subcalls,
            input_tokens=totals.input_tokens,
            output_tokens=totals.output_tokens,
            seconds=totals.seconds,
            stopped_by=stopped_by,
        )

    async def _interrupted(self, run_id: int, channel_id: str, thread_ts: str) -> None:
        """On shutdown: mark the run and tell its thread, briefly (the next start would too)."""
        try:
            async with asyncio.timeout(INTERRUPT_NOTICE_SECONDS):
                run = await self.store.get_run(run_id)
                if run is None or run.status not in ("queued", "running"):
                    return  # it ended just as the shutdown came
                await self.store.set_run_status(run_id, "interrupted")
                await self.poster.try_post(channel_id, messages.INTERRUPTED, thread_ts=thread_ts)
        except Exception:
            logger.warning("could not mark run %d interrupted at shutdown", run_id)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {_clip(str(exc), 500)}"


def _clip(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"
