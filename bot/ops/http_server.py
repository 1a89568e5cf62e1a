"""The HTTP server for HTTP mode: Slack's requests at /slack/events, health, readiness and
metrics (bot.ops.health), and a body size limit enforced before Bolt reads a byte.

A body declared larger than the limit is refused (413) from its headers alone; one sent
without a length is refused as soon as it passes the limit. Bolt then verifies the signature
and the 5-minute timestamp window (401 otherwise).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp

from bot.ops.health import Readiness, health_routes
from bot.ops.metrics import count_requests

logger = logging.getLogger("bot.http")

EVENTS_PATH = "/slack/events"
DEFAULT_MAX_REQUEST_BYTES = 1_048_576
TOO_LARGE = "Request body too large."


@dataclass
class HttpServer:
    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{EVENTS_PATH}"

    async def close(self) -> None:
        await self.runner.cleanup()


def _too_large(declared: int | None, limit: int) -> web.Response:
    if declared is None:
        logger.warning("refused a request body longer than the limit of %d bytes", limit)
    else:
        logger.warning("refused a request body of %d bytes (limit %d)", declared, limit)
    return web.Response(status=413, text=TOO_LARGE)


def _size_limit(limit: int) -> Middleware:
    @web.middleware
    async def size_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.content_length is not None and request.content_length > limit:
            return _too_large(request.content_length, limit)
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:  # a body without a length that went past it
            return _too_large(None, limit)

    return size_limit


def web_application(
    app: AsyncApp,
    *,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    readiness: Readiness | None = None,
) -> web.Application:
    async def events(request: web.Request) -> web.Response:
        bolt_response = await app.async_dispatch(await to_bolt_request(request))
        return await to_aiohttp_response(bolt_response)

    # client_max_size makes aiohttp stop reading a body at the limit.
    web_app = web.Application(
        client_max_size=max_request_bytes,
        # Counting first: it sees what the size limit refuses too.
        middlewares=[count_requests(EVENTS_PATH), _size_limit(max_request_bytes)],
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
) -> HttpServer:
    """Serve `app` at /slack/events (plus /healthz, /metrics, and /readyz checking
    `readiness`) until `close()`; port 0 picks one."""
    runner = web.AppRunner(
        web_application(app, max_request_bytes=max_request_bytes, readiness=readiness),
        access_log=None,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = int(runner.addresses[0][1])
    return HttpServer(runner=runner, host=host, port=bound)
