"""OpenTelemetry spans for runs, their iterations and their maps, when `opentelemetry-api`
is installed; without it every function here is a no-op (no hard dependency).

The spans go to whatever tracer provider the operator set up (`opentelemetry-instrument`,
or an SDK configured at start); with the API alone they are non-recording and cost little.
A run's span is current inside its task, so the iteration and map spans are its children.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from bot.telemetry.context import run_context

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
except ImportError:  # the optional extra is not installed: no spans
    trace = None  # type: ignore[assignment]
    otel_context = None  # type: ignore[assignment]

__all__ = ["TRACER_NAME", "enabled", "span", "start_run"]

TRACER_NAME = "rlm-slack"


def enabled() -> bool:
    return trace is not None


def span(name: str, *, parent: Any = None, start_time: int | None = None, **attributes: Any) -> Any:
    """A started span (end it with `.end()`), child of `parent` (a span) or else of the
    current one; None without OpenTelemetry."""
    if trace is None:
        return None
    tracer = trace.get_tracer(TRACER_NAME)
    context = trace.set_span_in_context(parent) if parent is not None else None
    return tracer.start_span(name, context, attributes=attributes, start_time=start_time)


def start_run(work: Coroutine[Any, Any, None], *, run_id: int, team_id: str) -> asyncio.Task[None]:
    """Start a run's work as a task whose logs carry the run and workspace, inside a "run"
    span ended (with the error, if any) when the task ends."""
    ctx = run_context(run_id, team_id)
    run_span = span("run", **{"rlm.run_id": run_id, "slack.team_id": team_id})
    if run_span is not None:
        ctx.run(otel_context.attach, trace.set_span_in_context(run_span))
    task = asyncio.create_task(work, name=f"run-{run_id}", context=ctx)
    if run_span is not None:
        task.add_done_callback(lambda t: _end_run(run_span, t))
    return task


def _end_run(run_span: Any, task: asyncio.Task[None]) -> None:
    assert trace is not None
    if task.cancelled():
        run_span.set_attribute("rlm.cancelled", True)
    elif (error := task.exception()) is not None:
        run_span.record_exception(error)
        run_span.set_status(trace.Status(trace.StatusCode.ERROR, type(error).__name__))
    run_span.end()
