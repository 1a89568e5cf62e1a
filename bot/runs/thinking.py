"""A run's thinking: the engine run over the gathered context, each iteration recorded, and
the run ended with its answer or with what went wrong, in the asker's words.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from bot.gather.context import CITE_INSTRUCTION
from bot.gather.gathered import GatheredContext
from bot.presence.run import RunPresence
from bot.runs.budgets import BudgetBook, RunCaps
from bot.runs.ends import RunEnds, Totals, clip, describe, provider_failure, tell_operator
from bot.runs.problems import record_operator_problem
from bot.runs.question import EngineConfig, Question
from bot.slack import messages
from bot.slack.admins import tell_if_admin
from bot.storage import Store
from bot.telemetry.runs import RunObserver
from rlm import RLM, Event, IterationFinished, ProviderError, RunFinished
from rlm._pricing import format_cost

logger = logging.getLogger("bot.runner")

# Past its time budget the engine still asks the root model for a best answer; a run not
# ended one provider timeout plus this slack (at most the budget itself) later is stopped.
DEADLINE_SLACK_SECONDS = 5.0


async def think(
    *,
    run_id: int,
    q: Question,
    presence: RunPresence,
    gathered: GatheredContext,
    caps: RunCaps,
    engine: EngineConfig,
    limiter: Any,
    store: Store,
    ends: RunEnds,
    budget: BudgetBook,
) -> None:
    """Run the engine over `gathered` for `q`, record each iteration, and end the run: its
    answer through `presence`, or the failure said in plain words."""
    totals = Totals()
    observer = RunObserver(team_id=q.team_id, provider=engine.sub_model)

    async def on_event(event: Event) -> None:
        observer.on_event(event)
        presence.on_event(event)
        if isinstance(event, IterationFinished):
            totals.add(event)
            # Waits out a database outage (bounded): the iteration is kept, not lost.
            await ends.keeper.retrying(
                lambda: store.record_iteration(
                    run_id,
                    iteration=event.iteration,
                    root_reply=event.root_reply,
                    code="\n\n".join(event.code_blocks),
                    output="\n\n".join(event.outputs),
                    subcalls=event.subcalls,
                    input_tokens=event.input_tokens,
                    output_tokens=event.output_tokens,
                    seconds=event.seconds,
                    cost_usd=event.cost,
                )
            )
        elif isinstance(event, RunFinished):
            totals.end(event)

    rlm = RLM(
        root_llm=engine.root_llm,
        sub_llm=engine.sub_llm,
        prompt_mode=engine.prompt_mode,
        max_iterations=caps.max_iterations,
        max_subcalls=caps.max_subcalls,
        max_tokens=caps.max_tokens,
        max_seconds=caps.max_seconds,
        max_cost=caps.max_cost,
        prices=engine.prices,
        max_map_chunks=engine.max_map_chunks,
        max_prompt_bytes=engine.max_prompt_bytes,
        sandbox_limits=engine.sandbox_limits,
        limiter=limiter,
        on_event=on_event,
        provider_max_concurrency=engine.provider_max_concurrency,
    )
    deadline = None
    if caps.max_seconds is not None:
        slack = min(DEADLINE_SLACK_SECONDS, caps.max_seconds)
        deadline = caps.max_seconds + engine.provider_timeout + slack
    logger.info("run %d running over %d chars", run_id, gathered.chars)
    timer = asyncio.timeout(deadline)
    try:
        async with timer:
            answer, _ = await rlm.query_async(q.text + CITE_INSTRUCTION, gathered.documents)
    except ProviderError as exc:
        observer.close()
        await record_operator_problem(store, q.team_id, exc)
        kind = provider_failure(exc)
        if kind.startswith("operator:"):
            tell_operator(run_id, kind, str(exc))
            said = messages.SETUP_PROBLEM
        else:
            logger.warning("run %d: provider failed: %s", run_id, exc)
            said = messages.PROVIDER_DOWN
        if await ends.fail(run_id, f"provider: {clip(str(exc), 500)}", totals, error_kind=kind):
            await presence.failed(said)
        return
    except Exception as exc:
        observer.close()
        if isinstance(exc, TimeoutError) and timer.expired():
            logger.warning("run %d: no answer within its time budget; stopped", run_id)
            if await ends.fail(
                run_id, "time budget", totals, stopped_by="max_seconds", error_kind="user:time"
            ):
                await presence.failed(messages.OUT_OF_TIME)
                await tell_if_admin(
                    ends.poster, q.channel_id, q.user_id, budget.admin_note("max_seconds", caps)
                )
        else:
            logger.exception("run %d failed", run_id)
            if await ends.fail(run_id, describe(exc), totals, error_kind="internal"):
                await presence.failed(messages.CRASHED)
        return
    text = answer.strip() or messages.EMPTY_ANSWER
    if totals.stopped_by:
        text += "\n\n" + budget.stopped_by(totals.stopped_by, caps)
    footer = messages.answer_footer(steps=totals.iterations, seconds=totals.seconds)
    summary = messages.summary_finished(
        steps=totals.iterations,
        seconds=totals.seconds,
        read=gathered.summary(),
        stopped_by=budget.which(totals.stopped_by, caps) if totals.stopped_by else None,
    )
    # Stored first, then shown: the thread never says "answered" of a run the database
    # does not (or that another replica has marked interrupted and told its thread of).
    if not await ends.end(run_id, "finished", totals, answer=answer, stopped_by=totals.stopped_by):
        await presence.close()
        return
    await presence.answered(answer=text, footer=footer, links=gathered.links, summary=summary)
    if totals.stopped_by:
        await tell_if_admin(
            ends.poster, q.channel_id, q.user_id, budget.admin_note(totals.stopped_by, caps)
        )
    logger.info(
        "run %d finished: %d iterations, %d sub-calls, %.1f s, cost %s%s",
        run_id,
        totals.iterations,
        totals.subcalls,
        totals.seconds,
        format_cost(totals.cost_usd),
        f", stopped by {totals.stopped_by}" if totals.stopped_by else "",
    )
