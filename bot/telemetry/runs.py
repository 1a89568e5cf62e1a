"""What a run reports while it runs: the engine's events counted (sub-calls by provider and
outcome, tokens per workspace) and traced (iteration and map spans), and the runs in flight.

`RunObserver.on_event` is called with each engine event of one run; it never raises into
the run (telemetry that fails must not fail an answer).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from bot.telemetry import spans
from bot.telemetry.metrics import RUNS_IN_FLIGHT, SUBCALLS, TOKENS
from rlm import Event, IterationFinished, IterationStarted, RootReplied, SubcallProgress

__all__ = ["RunObserver", "counts_in_flight"]

logger = logging.getLogger("bot.telemetry")

_F = TypeVar("_F", bound=Callable[..., Coroutine[Any, Any, Any]])


class RunObserver:
    """Counts and traces one run from its engine events. `provider`: the sub-model's spec
    (`provider:model`); its provider part labels the sub-calls."""

    def __init__(self, *, team_id: str, provider: str) -> None:
        self.team_id = team_id
        self.provider = provider.split(":", 1)[0]
        self._iteration: Any = None
        # When the code that runs the next map started: after the root replied, or after
        # the previous map ended (maps in one block run one after another).
        self._mark = time.time_ns()

    def on_event(self, event: Event) -> None:
        try:
            self._observe(event)
        except Exception:  # a metric or exporter bug must not end a run
            logger.exception("telemetry failed on %s", type(event).__name__)

    def _observe(self, event: Event) -> None:
        if isinstance(event, IterationStarted):
            self._end_iteration()
            self._iteration = spans.span("iteration", **{"rlm.iteration": event.iteration})
        elif isinstance(event, RootReplied):
            self._mark = time.time_ns()
        elif isinstance(event, SubcallProgress) and event.done == event.total:
            refused = event.refused
            failed = event.failed - refused
            SUBCALLS.labels(self.provider, "ok").inc(event.total - event.failed)
            if failed:
                SUBCALLS.labels(self.provider, "failed").inc(failed)
            if refused:
                SUBCALLS.labels(self.provider, "refused").inc(refused)
            now = time.time_ns()
            if event.total > 1:  # a parallel_query over chunks: a map
                mapped = spans.span(
                    "map",
                    parent=self._iteration,
                    start_time=self._mark,
                    **{"rlm.chunks": event.total, "rlm.failed": event.failed},
                )
                if mapped is not None:
                    mapped.end(end_time=now)
            self._mark = now
        elif isinstance(event, IterationFinished):
            TOKENS.labels(self.team_id, "input").inc(event.input_tokens)
            TOKENS.labels(self.team_id, "output").inc(event.output_tokens)
            if self._iteration is not None:
                self._iteration.set_attribute("rlm.subcalls", event.subcalls)
            self._end_iteration()

    def _end_iteration(self) -> None:
        if self._iteration is not None:
            self._iteration.end()
            self._iteration = None

    def close(self) -> None:
        """The run ended: an iteration it left open ends with it."""
        self._end_iteration()


def counts_in_flight(method: _F) -> _F:
    """Decorates a runner's `(self, run_id, question, ...)` coroutine method: the run counts
    in `RUNS_IN_FLIGHT` for its workspace while the method runs."""

    @functools.wraps(method)
    async def counted(self: Any, run_id: int, question: Any, *args: Any, **kwargs: Any) -> Any:
        gauge = RUNS_IN_FLIGHT.labels(question.team_id)
        gauge.inc()
        try:
            return await method(self, run_id, question, *args, **kwargs)
        finally:
            gauge.dec()

    return counted  # type: ignore[return-value]
