"""How a run's end is recorded: its totals, how it failed and who can fix that, and an
interruption at shutdown. The runner decides; this module writes it down.

An error kind says who can act: "user:<what>" (ask again, narrower, later) or
"operator:<what>" (a refused key, an unknown model, a missing Slack scope), which is logged
with its fix (`admin_messages.OPERATOR_FIXES`) and kept on the run for admins
(`Store.operator_problems`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import aiohttp
from slack_sdk.errors import SlackApiError

from bot.presence.blocks import summary_blocks
from bot.runs.keeping import RunKeeper, database_away
from bot.slack import admin_messages, messages
from bot.slack.api import SlackPoster
from bot.storage import RunRecord, Store
from bot.telemetry.metrics import RUNS
from rlm import (
    AuthenticationError,
    BadResponseError,
    IterationFinished,
    ProviderError,
    RunFinished,
)

logger = logging.getLogger("bot.runner")

INTERRUPT_NOTICE_SECONDS = 5.0


@dataclass
class Totals:
    iterations: int = 0
    subcalls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    seconds: float = 0.0
    stopped_by: str | None = None
    cost_usd: float | None = 0.0  # None: a model without a price was called
    cached_input_tokens: int = 0
    finished: RunFinished | None = field(default=None, repr=False)

    def add(self, event: IterationFinished) -> None:
        self.iterations = max(self.iterations, event.iteration)
        self.subcalls += event.subcalls
        self.input_tokens += event.input_tokens
        self.output_tokens += event.output_tokens
        self.seconds += event.seconds
        self.cached_input_tokens += event.cached_input_tokens
        if self.cost_usd is not None:
            self.cost_usd = None if event.cost is None else self.cost_usd + event.cost

    def end(self, event: RunFinished) -> None:
        self.finished = event
        self.iterations, self.subcalls = event.iterations, event.subcalls
        self.input_tokens, self.output_tokens = event.input_tokens, event.output_tokens
        self.seconds, self.stopped_by = event.seconds, event.stopped_by
        self.cost_usd, self.cached_input_tokens = event.cost, event.cached_input_tokens


class RunEnds:
    def __init__(
        self, *, store: Store, poster: SlackPoster, keeper: RunKeeper | None = None
    ) -> None:
        self.store = store
        self.poster = poster
        self.keeper = keeper or RunKeeper(store)

    async def recover(
        self,
        owners: Iterable[str | None] | None = None,
        statuses: Iterable[str] = ("queued", "running"),
    ) -> int:
        """Mark runs a crash left unfinished as interrupted (all, or those of `owners`) and
        tell their threads; a run another replica marked first is left to it."""
        return await self.tell_interrupted(await self.store.mark_interrupted_runs(owners, statuses))

    async def recover_expired(self) -> int:
        """Mark interrupted the running runs whose lease ran out in the database (their
        replica stopped renewing it) and tell their threads; each is marked by one replica."""
        return await self.tell_interrupted(await self.store.mark_expired_runs())

    async def tell_interrupted(self, runs: list[RunRecord]) -> int:
        for run in runs:
            logger.info("run %d was left unfinished by a stopped process: interrupted", run.id)
            if run.status_ts and await self._mark_status(run.id, run.channel_id, run.status_ts):
                continue
            if run.thread_ts:
                await self.poster.try_post(
                    run.channel_id, messages.INTERRUPTED, thread_ts=run.thread_ts
                )
        return len(runs)

    async def _mark_status(self, run_id: int, channel_id: str, status_ts: str) -> bool:
        """Turn a dead run's status message into "interrupted" with Retry; False if Slack
        would not (the message is gone), so the thread is told with a post instead."""
        try:
            await self.poster.client.chat_update(
                channel=channel_id,
                ts=status_ts,
                text=messages.INTERRUPTED,
                blocks=summary_blocks(run_id, messages.INTERRUPTED, retry=True),
            )
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            logger.info("status of run %d not updated: %s", run_id, exc)
            return False
        return True

    async def fail(
        self,
        run_id: int,
        error: str,
        totals: Totals | None = None,
        *,
        stopped_by: str | None = None,
        status: str = "failed",
        error_kind: str | None = None,
    ) -> bool:
        """Mark the run failed (or stopped), with `totals`, or else the totals its stored
        iterations give; False if the run is no longer this process's to end (show nothing)."""
        if totals is None:
            try:
                run = await self.keeper.retrying(lambda: self.store.get_run(run_id))
            except Exception as exc:
                if not database_away(exc):
                    raise
                run = None
            totals = Totals()
            if run is not None:
                totals.iterations, totals.subcalls = run.iterations, run.subcalls
                totals.input_tokens, totals.output_tokens = run.input_tokens, run.output_tokens
                totals.seconds = run.seconds
                totals.cost_usd, totals.cached_input_tokens = run.cost_usd, run.cached_input_tokens
        return await self.end(
            run_id, status, totals, error=error, stopped_by=stopped_by, error_kind=error_kind
        )

    async def end(
        self,
        run_id: int,
        status: str,
        totals: Totals,
        *,
        answer: str | None = None,
        error: str | None = None,
        stopped_by: str | None = None,
        error_kind: str | None = None,
    ) -> bool:
        """Store the run's end before anything shows it: True when it may be shown (stored,
        or waiting in the outbox for the database), False when the run is lost to this
        process (another replica marked it interrupted and told its thread)."""
        written = await self.keeper.finish(
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
            error_kind=error_kind,
            cost_usd=totals.cost_usd,
            cached_input_tokens=totals.cached_input_tokens,
        )
        if written.shown:
            RUNS.labels(status).inc()
        return written.shown

    async def interrupted(self, run_id: int, tell: Callable[[str], Awaitable[None]]) -> None:
        """On shutdown: mark the run and `tell` its thread, briefly (the next start would
        too, with a post of its own)."""
        try:
            async with asyncio.timeout(INTERRUPT_NOTICE_SECONDS):
                run = await self.store.get_run(run_id)
                if run is None or run.status not in ("queued", "running"):
                    return  # it ended just as the shutdown came
                if await self.keeper.set_status(run_id, "interrupted"):
                    RUNS.labels("interrupted").inc()
                    await tell(messages.INTERRUPTED)
        except Exception:
            logger.warning("could not mark run %d interrupted at shutdown", run_id)


def tell_operator(run_id: int, kind: str, detail: str) -> None:
    """What only an operator can fix goes to the log with the fix (the run keeps the kind)."""
    fix = admin_messages.OPERATOR_FIXES.get(kind, "see the log")
    logger.error("run %d: %s (%s); fix: %s", run_id, kind, clip(detail, 300), fix)


def provider_failure(exc: ProviderError) -> str:
    """Who can fix a provider's failure: a refused key or an unknown model needs an operator."""
    if isinstance(exc, AuthenticationError):
        return "operator:provider_auth"
    if isinstance(exc, BadResponseError) and exc.status == 404:
        return "operator:unknown_model"
    return "user:provider"


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {clip(str(exc), 500)}"


def clip(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"
