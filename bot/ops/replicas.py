"""Several `rlm-bot` processes on one database: shared caps, run ownership and recovery.

With `REDIS_URL` set, each replica holds a liveness lease in Redis and stamps its id on the
runs it takes (`runs.owner`). At start and every half lease after, a replica looks for
unfinished runs whose owner's lease has run out: those it marks interrupted, each by one
conditional UPDATE, so exactly one replica reports it and its thread is told once. Without
`REDIS_URL` the app is one process, and at start every unfinished run is a previous one's.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from bot.telemetry.context import set_replica

if TYPE_CHECKING:
    from bot.runs.runner import Runner
    from bot.runs.shared_limits import SharedLimits
    from bot.settings import Settings

logger = logging.getLogger("bot.replicas")

_NO_REDIS_PACKAGE = (
    "REDIS_URL is set but the redis package is not installed: "
    "pip install 'rlm-slack[redis]', or unset REDIS_URL to run one process."
)
_CANNOT_REACH = "Redis at {url} could not be reached ({detail}); check REDIS_URL."


def _shown(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


async def open_shared_limits(settings: Settings) -> SharedLimits:
    """Connect to `REDIS_URL` and announce this replica; ValueError (one line) if it cannot."""
    assert settings.redis_url is not None
    try:
        from redis.exceptions import RedisError

        from bot.runs.shared_limits import SharedLimits
    except ImportError:
        raise ValueError(_NO_REDIS_PACKAGE) from None
    limits = SharedLimits.from_url(
        settings.redis_url,
        prefix=settings.rlm_redis_prefix,
        lease_seconds=settings.rlm_lease_seconds,
    )
    try:
        await limits.start()
    except (RedisError, OSError) as exc:
        await limits.redis.aclose()
        shown = _shown(settings.redis_url)
        detail = str(exc).replace(settings.redis_url, shown)
        raise ValueError(_CANNOT_REACH.format(url=shown, detail=detail)) from None
    set_replica(limits.replica_id)  # log lines name the replica as the others know it
    logger.info("replica %s sharing limits through Redis", limits.replica_id)
    return limits


async def recover_orphans(runner: Runner, limits: SharedLimits) -> int:
    """Mark interrupted the unfinished runs of replicas whose lease has run out."""
    # Queued runs belong to nobody (any replica may take them): only running ones are owned.
    owners = await runner.store.active_run_owners(statuses=("running",))
    others = {owner for owner in owners if owner != limits.replica_id}
    if not others:
        return 0
    alive = await limits.alive({owner for owner in others if owner is not None})
    gone = others - alive
    return await runner.recover(gone, statuses=("running",)) if gone else 0


async def watch_for_orphans(runner: Runner, limits: SharedLimits, interval: float) -> None:
    """Recover the runs of replicas that died, every `interval` seconds, until cancelled."""
    while True:
        await asyncio.sleep(interval)
        try:
            found = await recover_orphans(runner, limits)
        except Exception as exc:  # the database or Redis is away for a moment: try later
            logger.warning("could not look for runs of stopped replicas: %s", exc)
            continue
        if found:
            logger.info("marked %d run(s) of a stopped replica interrupted", found)
