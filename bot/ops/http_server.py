"""The HTTP server for HTTP mode: Slack's requests at /slack/events, health, readiness and
metrics (bot.ops.health), and a body size limit enforced before Bolt reads a byte.

A body declared larger than the limit is refused (413) from its headers alone; one sent
without a length is refused as soon as it passes the limit. At /slack/events the signature
and its 5-minute window are then checked on the raw bytes before any parsing, and the body's
shape after (`bot.ops.verify`): a stranger gets a 401 and an odd body a 400, counted in
`HttpServer.stats` and summed up in one log line per minute. Bolt verifies again (it costs
one HMAC of a body already known good).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp

from bot.ops.health import Readiness, health_routes
from bot.ops.metrics import count_requests
from bot.ops.verify import TOO_LARGE as TOO_LARGE  # the 413 text, as tests know it
from bot.ops.verify import RequestStats, SlackRequestGate, refusal

logger = logging.getLogger("bot.http")

EVENTS_PATH = "/slack/events"
DEFAULT_MAX_REQUEST_BYTES = 1_048_576


@dataclass
class HttpServer:
    runner: web.AppRunner
    host: str
    port: int
    stats: RequestStats  # requests to /slack/events by outcome, 401s and 413s included

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{EVENTS_PATH}"

    async def close(self) -> None:
        self.stats.flush()
        await self.runner.cleanup()


def _too_large(declared: int | None, limit: int, stats: RequestStats) -> web.Response:
    if declared is None:
        stats.refused("too_large", f"longer than the limit of {limit} bytes")
    else:
        stats.refused("too_large", f"{declared} bytes, limit {limit}")
    return refusal("too_large")


def _size_limit(limit: int, stats: RequestStats) -> Middleware:
    @web.middleware
    async def size_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.content_length is not None and request.content_length > limit:
            return _too_large(request.content_length, limit, stats)
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:  # a body without a length that went past it
            return _too_large(None, limit, stats)

    return size_limit


def web_application(
    app: AsyncApp,
    *,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    readiness: Readiness | None = None,
    signing_secret: str | None = None,
    stats: RequestStats | None = None,
) -> web.Application:
    """The aiohttp application serving `app`; `signing_secret` defaults to the one `app`
    was built with."""
    stats = stats if stats is not None else RequestStats()
    # Bolt keeps the secret it was given only privately; the same value is checked here first.
    gate = SlackRequestGate(signing_secret or app._signing_secret, stats)

    async def events(request: web.Request) -> web.Response:
        admitted = await gate.admit(request)
        if isinstance(admitted, web.Response):
            return admitted
        return await to_aiohttp_response(await app.async_dispatch(admitted))

    # client_max_size makes aiohttp stop reading a body at the limit.
    web_app = web.Application(
        client_max_size=max_request_bytes,
        # Counting first: it sees what the size limit refuses too.
        middlewares=[count_requests(EVENTS_PATH), _size_limit(max_request_bytes, stats)],
    )
    web_app.router.add_post(EVENTS_PATH, events)
    web_app.add_routes(health_routes(readiness))
    if app.oauth_flow is not None:  # OAuth installs: the install page and the redirect
        from bot.workspaces.installs import oauth_routes

        web_app.add_routes(oauth_routes(app.oauth_flow))
    return web_app


async def serve_http(
    app: AsyncApp,
    *,
    host: str = "0.0.0.0",
    port: int = 3000,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    readiness: Readiness | None = None,
    signing_secret: str | None = None,
) -> HttpServer:
    """Serve `app` at /slack/events (plus /healthz, /metrics, and /readyz checking
    `readiness`) until `close()`; port 0 picks one."""
    stats = RequestStats()
    runner = web.AppRunner(
        web_application(
            app,
            max_request_bytes=max_request_bytes,
            readiness=readiness,
            signing_secret=signing_secret,
            stats=stats,
        ),
        access_log=None,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = int(runner.addresses[0][1])
    return HttpServer(runner=runner, host=host, port=bound, stats=stats)
