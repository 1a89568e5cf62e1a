"""Several `rlm-bot` processes on one database: shared caps, run ownership and recovery.

With `REDIS_URL` set, Redis holds the caps every replica shares, and the database holds who
runs what: a replica stamps its id on the runs it claims (`runs.owner`, with the claim's
`epoch`) and renews their leases in their rows every third of a lease. It also looks for
running runs whose lease ran out by the database's clock: those it marks interrupted, each
by one conditional UPDATE, so exactly one replica reports it and its thread is told once. A
Redis that restarts empty changes none of that. Without `REDIS_URL` the app is one process,
and at start every unfinished run is a previous one's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from bot.runs.keeping import OutageLog
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


async def recover_orphans(runner: Runner) -> int:
    """Mark interrupted the running runs whose lease ran out in the database."""
    return await runner.ends.recover_expired()


class LeaseKeeper:
    """Every `interval`: renew the leases of this replica's runs (a run found lost is
    stopped here without a word: whoever marked it told its thread), then mark interrupted
    the runs of replicas that stopped renewing theirs.

    After this replica could not reach the database, it marks nothing until it has reached
    it for a whole lease again: in an outage of the database every replica's leases run out
    together, and their owners need one renewal to take them back."""

    def __init__(self, runner: Runner, lease_seconds: float, interval: float) -> None:
        self.runner = runner
        self.lease_seconds = lease_seconds
        self.interval = interval
        self.reached_since: float | None = time.monotonic() - lease_seconds
        self.outage = OutageLog("the database", logger)

    async def once(self) -> int:
        """One round; returns how many runs of stopped replicas it marked."""
        try:
            lost = await self.runner.keeper.renew()  # a round trip even when none is held
        except Exception as exc:
            self._failed(exc)
            return 0
        self._reached()
        for run_id in lost:
            self.runner.lose(run_id)
        assert self.reached_since is not None
        if time.monotonic() - self.reached_since < self.lease_seconds:
            return 0
        try:
            return await recover_orphans(self.runner)
        except Exception as exc:
            self._failed(exc)
            return 0

    def _failed(self, exc: Exception) -> None:
        self.outage.failed(exc)
        self.reached_since = None

    def _reached(self) -> None:
        self.outage.ok()
        if self.reached_since is None:
            self.reached_since = time.monotonic()

    async def watch(self) -> None:
        """Until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            found = await self.once()
            if found:
                logger.info("marked %d run(s) of a stopped replica interrupted", found)
