"""Health, readiness and metrics over HTTP: beside /slack/events in HTTP mode, and on a small
listener of their own in Socket Mode (with the OAuth install pages when those are on).

`/healthz` says the process is alive and its loop turns (no I/O). `/readyz` makes one round
trip to the database and, with REDIS_URL, pings Redis, each within `READY_TIMEOUT_SECONDS`,
and answers 200 or 503 with a JSON body naming each: {"database": "ok", "redis": "error:
..."}. `/metrics` is Prometheus' text format (bot.ops.metrics).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from bot.ops.metrics import METRICS_PATH, metrics

__all__ = [
    "HEALTH_PATH",
    "READY_PATH",
    "Readiness",
    "health_routes",
    "serve_health",
]

logger = logging.getLogger("bot.health")

HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
# A readiness probe answers well inside a load balancer's usual timeout (1-5 s).
READY_TIMEOUT_SECONDS = 2.0
OK = "ok"
# Long driver messages are cut: the body is for a person glancing at a probe.
MAX_DETAIL_CHARS = 200


class Database(Protocol):
    async def ping(self) -> None: ...


class Pingable(Protocol):
    def ping(self) -> Awaitable[Any]: ...


@dataclass
class Readiness:
    """What must answer for this replica to take work: the database and, when set, Redis."""

    database: Database
    redis: Pingable | None = None
    timeout: float = READY_TIMEOUT_SECONDS
    # Probes come every few seconds: a change is logged, not every answer.
    _was_ready: bool = field(default=True, repr=False)

    async def check(self) -> dict[str, str]:
        """Each dependency named, "ok" or "error: <what>", probed at the same time."""
        probes: dict[str, Callable[[], Awaitable[Any]]] = {"database": self.database.ping}
        if self.redis is not None:
            probes["redis"] = self.redis.ping
        results = await asyncio.gather(*(self._probe(p) for p in probes.values()))
        checks = dict(zip(probes, results, strict=True))
        ready = all(value == OK for value in checks.values())
        if ready != self._was_ready:
            if ready:
                logger.info("ready again: %s", checks)
            else:
                logger.warning("not ready: %s", checks)
            self._was_ready = ready
        return checks

    async def _probe(self, ping: Callable[[], Awaitable[Any]]) -> str:
        try:
            async with asyncio.timeout(self.timeout):
                await ping()
        except TimeoutError:
            return f"error: no answer within {self.timeout:g} s"
        except Exception as exc:
            detail = str(exc).splitlines()[0] if str(exc) else ""
            return f"error: {type(exc).__name__}: {detail}"[:MAX_DETAIL_CHARS].rstrip(": ")
        return OK


async def _healthz(_: web.Request) -> web.Response:
    return web.Response(text=OK)


def health_routes(readiness: Readiness | None) -> list[web.RouteDef]:
    """/healthz and /metrics, and /readyz when there is something to check."""
    routes = [web.get(HEALTH_PATH, _healthz), web.get(METRICS_PATH, metrics)]
    if readiness is not None:

        async def readyz(_: web.Request) -> web.Response:
            checks = await readiness.check()
            ready = all(value == OK for value in checks.values())
            return web.json_response(checks, status=200 if ready else 503)

        routes.append(web.get(READY_PATH, readyz))
    return routes


async def serve_health(
    readiness: Readiness | None,
    *,
    host: str,
    port: int,
    extra_routes: list[web.RouteDef] | None = None,
) -> web.AppRunner:
    """Socket Mode's small listener: health, readiness, metrics (and `extra_routes`, the
    install pages with OAuth) on `port` (0 picks one); `cleanup()` it to stop."""
    web_app = web.Application(client_max_size=64 * 1024)
    web_app.add_routes(health_routes(readiness) + (extra_routes or []))
    runner = web.AppRunner(web_app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
