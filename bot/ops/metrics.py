"""/metrics: the process's Prometheus metrics in the text format, and the middleware that
times and counts every request to /slack/events.

The metric objects themselves live in `bot.telemetry.metrics` (the bottom room, so runs and
the Slack client can count too) and are re-exported here for the request path:
`REQUESTS` is counted by `count_requests` from the status each request was answered with,
so the handler itself counts only its finer reasons of refusal, in one line:
`REJECTED.labels(reason="bad_signature").inc()`.
"""

from __future__ import annotations

import time

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bot.telemetry.metrics import (
    ACK_SECONDS,
    REGISTRY,
    REJECTED,
    REQUESTS,
    RUNS,
    RUNS_IN_FLIGHT,
    RUNS_QUEUED,
    SLACK_CALLS,
    SLACK_RATE_LIMITED,
    SUBCALLS,
    TOKENS,
    request_outcome,
)

__all__ = [
    "ACK_SECONDS",
    "METRICS_PATH",
    "REGISTRY",
    "REJECTED",
    "REQUESTS",
    "RUNS",
    "RUNS_IN_FLIGHT",
    "RUNS_QUEUED",
    "SLACK_CALLS",
    "SLACK_RATE_LIMITED",
    "SUBCALLS",
    "TOKENS",
    "count_requests",
    "metrics",
]

METRICS_PATH = "/metrics"


async def metrics(_: web.Request) -> web.Response:
    """The registry in Prometheus' text format."""
    response = web.Response(body=generate_latest(REGISTRY))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


def count_requests(path: str) -> Middleware:
    """A middleware timing (`ACK_SECONDS`) and counting (`REQUESTS`) each request to `path`
    by the status it was answered with; put first, it sees refusals of later middlewares."""

    @web.middleware
    async def counted(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path != path:
            return await handler(request)
        started = time.monotonic()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            ACK_SECONDS.observe(time.monotonic() - started)
            REQUESTS.labels(outcome=request_outcome(status)).inc()

    return counted
