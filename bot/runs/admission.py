"""A question becomes a run: stored before anything is posted, so the asker is always told
something. A question that cannot be stored (the database away, the disk full) raises
`NotTaken`, and its asker gets one message saying so (`messages.NOT_TAKEN`): ephemeral in
a slash command's acknowledgement, a reply in the thread of a mention; nothing is echoed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from bot.runs.keeping import database_away
from bot.runs.question import Question

if TYPE_CHECKING:
    from bot.runs.runner import Runner

logger = logging.getLogger("bot.runner")

# A slash command is acknowledged within Slack's 3 seconds, with its run or with NOT_TAKEN.
ADMIT_SECONDS = 2.0

_late: set[asyncio.Future[Any]] = set()  # ends of runs stored after their asker was told


class NotTaken(Exception):
    """The question could not be stored as a run; its asker is to be told, once."""


async def admit(runner: Runner, q: Question) -> int | str:
    """Store `q` as a queued run: its id, or what a budget says in refusing it. NotTaken if
    it cannot be stored within `ADMIT_SECONDS` (a run stored later is marked failed, unseen)."""
    try:
        refusal = await runner.budget.refusal(q.team_id)
        if refusal is not None:
            return refusal
        earlier = (
            []
            if q.thread_ts is None
            else await runner.store.thread_runs(q.team_id, q.channel_id, q.thread_ts)
        )
    except Exception as exc:
        if database_away(exc):
            raise NotTaken(str(exc)) from exc
        raise
    # A question in a run's thread keeps that run's scope.
    scope = (earlier[0].scope if earlier else None) or q.scope
    creating = asyncio.ensure_future(
        runner.store.create_run(
            team_id=q.team_id,
            channel_id=q.channel_id,
            thread_ts=q.thread_ts,  # a slash command's: its echo's, once posted
            user_id=q.user_id,
            question=q.text,
            root_model=runner.engine.root_model,
            sub_model=runner.engine.sub_model,
            trigger=q.trigger,
            scope=scope,
            scope_ts=q.thread_ts if scope == "thread" else None,
            owner=runner.owner if runner.queue is None else None,  # a shared one: its claimer
            exclude_ts=",".join(q.exclude_ts) or None,
        )
    )
    try:
        async with asyncio.timeout(ADMIT_SECONDS):
            return await asyncio.shield(creating)
    except TimeoutError:
        creating.add_done_callback(lambda done: _drop_late(runner, done))
        raise NotTaken("the database did not answer in time") from None
    except Exception as exc:
        if database_away(exc):
            raise NotTaken(str(exc)) from exc
        raise


def _drop_late(runner: Runner, creating: asyncio.Future[int]) -> None:
    if creating.cancelled() or creating.exception() is not None:
        return
    run_id = creating.result()
    logger.warning("run %d was stored after its asker was told it was not taken", run_id)
    late = asyncio.ensure_future(
        runner.ends.fail(run_id, "not taken: stored too late", error_kind="user:not_taken")
    )
    _late.add(late)
    late.add_done_callback(_late.discard)
