"""Per-workspace caps held in Redis, so that every replica of the app shares them.

A cap is a sorted set of slot holders scored by when their lease runs out (Redis server
time, in ms). One Lua script drops the expired leases and takes a slot only while fewer than
the cap are held, so the count never passes the cap whichever replica asks. Each replica
renews the leases it holds every third of a lease, so one that dies frees its slots once they
run out (`lease_seconds`); a release is announced on a pub/sub channel, so waiters on every
replica try again at once, and a waiter also retries when the earliest lease would expire.

Within one replica, waiters for one cap queue in arrival order and only the oldest asks
Redis; across replicas, whoever asks first after a release gets the slot.

Redis holds caps only (who runs a run is in the database, `bot.storage`), and may restart
empty: the renewals then put back every slot still held, and for a grace of one and a half
renewal periods after Redis is found empty (the key `{prefix}:up-since` is gone) no new slot
is given, so the holders have put theirs back before anyone counts. An outage is logged
once when it starts and once when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
import socket
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.runs.keeping import OutageLog

logger = logging.getLogger("bot.shared_limits")

# Waiters retry at least this often even when no release was announced (a lost message, a
# lease that ran out), and back off this long when Redis cannot be reached.
POLL_SECONDS = 0.5
RETRY_SECONDS = 1.0

_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# Redis found empty (restarted): the time it was found so, kept in KEYS[2] (`up-since`).
_UP_SINCE = """
local since = redis.call('GET', KEYS[2])
if not since then
  redis.call('SET', KEYS[2], now)
  since = now
end
since = tonumber(since)
"""

# KEYS[1] the cap's set, KEYS[2] up-since; ARGV: cap, lease ms, token, grace ms. -1: taken;
# else ms until a lease ends (or the grace after an empty restart does).
ACQUIRE = (
    _NOW_MS
    + _UP_SINCE
    + """
if now < since + tonumber(ARGV[4]) then
  return since + tonumber(ARGV[4]) - now
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return -1
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(first[2]) - now)
"""
)

# KEYS[1] the cap's set, KEYS[2] the release channel; ARGV: token, the message.
RELEASE = """
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('PUBLISH', KEYS[2], ARGV[2])
return removed
"""

# KEYS[1] the cap's set, KEYS[2] up-since; ARGV: lease ms, tokens... Every token is held
# again for a lease; returns those Redis had lost (it restarted empty) and now holds again.
RENEW = (
    _NOW_MS
    + _UP_SINCE
    + """
local back = {}
for i = 2, #ARGV do
  if redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[i]) == 1 then
    table.insert(back, ARGV[i])
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return back
"""
)


def new_replica_id() -> str:
    """This process's name among the replicas: host, pid and a random part (pids repeat)."""
    return f"{socket.gethostname()[:24]}-{os.getpid()}-{secrets.token_hex(4)}"


class SharedLimits:
    """One replica's view of the caps in Redis: its leases, their renewal, the wake-ups."""

    def __init__(
        self, redis: Redis, *, prefix: str, lease_seconds: float, replica_id: str | None = None
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.lease_ms = max(1000, int(lease_seconds * 1000))
        self.replica_id = replica_id or new_replica_id()
        self.channel = f"{prefix}:released"
        self.up_since = f"{prefix}:up-since"
        # After Redis is found empty, no slot is given for this long: the renewals of every
        # replica (one each third of a lease) put back the slots they hold first.
        self.grace_ms = self.lease_ms // 2
        self.outage = OutageLog("Redis", logger)
        self._acquire = redis.register_script(ACQUIRE)
        self._release = redis.register_script(RELEASE)
        self._renew = redis.register_script(RENEW)
        self._semaphores: dict[str, SharedSemaphore] = {}
        self._held: dict[str, set[str]] = {}
        self._counter = itertools.count(1)
        self._tasks: list[asyncio.Task[None]] = []
        self._stray: set[asyncio.Task[Any]] = set()
        self._closing = False

    @classmethod
    def from_url(cls, url: str, *, prefix: str, lease_seconds: float) -> SharedLimits:
        return cls(Redis.from_url(url), prefix=prefix, lease_seconds=lease_seconds)

    async def start(self) -> None:
        """Start renewing and listening; RedisError if Redis cannot be reached."""
        # A replica starting finds Redis as it is: no grace unless it later comes back empty.
        await self.redis.set(self.up_since, 0, nx=True)
        self._tasks = [
            asyncio.create_task(self._keep_leases(), name="renew-leases"),
            asyncio.create_task(self._listen(), name="listen-releases"),
        ]

    async def close(self) -> None:
        """Stop renewing and give back every slot still held (once)."""
        if self._closing:
            return
        self._closing = True
        if self._tasks:
            self._tasks[0].cancel()  # the renewals; the listener ends by itself
            await asyncio.wait(self._tasks, timeout=2 * POLL_SECONDS + 1)
        for task in self._tasks:  # still going only if Redis hangs: leave it no choice
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        while self._stray:
            await asyncio.gather(*list(self._stray), return_exceptions=True)
        with contextlib.suppress(RedisError):
            for key, tokens in list(self._held.items()):
                for token in list(tokens):
                    await self._release(keys=[key, self.channel], args=[token, key])
        self._held.clear()
        await self.redis.aclose()

    def semaphore(self, name: str, cap: int) -> SharedSemaphore:
        """The cap called `name` (for example `subcalls:T123`), made on first use."""
        key = f"{self.prefix}:cap:{name}"
        found = self._semaphores.get(key)
        if found is None:
            found = self._semaphores[key] = SharedSemaphore(self, key, cap)
        return found

    def keyed(self, kind: str, cap: int) -> SharedKeyedLimiter:
        return SharedKeyedLimiter(self, kind, cap)

    # -- used by SharedSemaphore ----------------------------------------------------------

    def _token(self) -> str:
        return f"{self.replica_id}:{next(self._counter)}"

    async def _try(self, key: str, cap: int, token: str) -> float | None:
        """Take a slot for `token`: None if taken, else seconds until a lease may end."""
        try:
            result = int(
                await self._acquire(
                    keys=[key, self.up_since], args=[cap, self.lease_ms, token, self.grace_ms]
                )
            )
        except RedisError as exc:
            self.outage.failed(exc)
            raise
        self.outage.ok()
        if result < 0:
            self._held.setdefault(key, set()).add(token)
            return None
        return result / 1000

    async def _give_back(self, key: str, token: str) -> None:
        self._held.get(key, set()).discard(token)
        try:
            await self._release(keys=[key, self.channel], args=[token, key])
        except RedisError as exc:  # the lease runs out by itself
            self.outage.failed(exc)

    def _give_back_later(self, key: str, token: str) -> None:
        task = asyncio.create_task(self._give_back(key, token))
        self._stray.add(task)
        task.add_done_callback(self._stray.discard)

    async def _keep_leases(self) -> None:
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            try:
                await self.renew()
            except RedisError as exc:
                self.outage.failed(exc)
            else:
                self.outage.ok()

    async def renew(self) -> None:
        """Hold every slot this replica holds for another lease, putting back into Redis
        those it lost (it restarted empty, or was away longer than a lease)."""
        for key, tokens in list(self._held.items()):
            if not tokens:
                self._held.pop(key, None)
                continue
            back = await self._renew(keys=[key, self.up_since], args=[self.lease_ms, *tokens])
            for raw in back:
                token = raw.decode() if isinstance(raw, bytes) else str(raw)
                if token in self._held.get(key, ()):
                    logger.info("a slot of %s is held again (Redis had lost it)", key)
                else:  # released while we renewed: not ours to keep
                    await self._release(keys=[key, self.channel], args=[token, key])

    async def _listen(self) -> None:
        # get_message with a timeout, not listen(): redis-py's listen() can swallow the
        # cancellation that close() sends, so close() asks this loop to end instead.
        while not self._closing:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                for semaphore in self._semaphores.values():  # anything missed meanwhile
                    semaphore.wake()
                while not self._closing:
                    message = await pubsub.get_message(timeout=POLL_SECONDS)
                    if message is None:
                        continue
                    data = message.get("data")
                    key = data.decode() if isinstance(data, bytes) else str(data)
                    semaphore = self._semaphores.get(key)
                    if semaphore is not None:
                        semaphore.wake()
            except RedisError as exc:  # polling meanwhile
                # Not an outage by itself: a subscription cut by a Redis restart breaks only
                # after Redis is back. The round trips (take, renew, give back) say when
                # Redis is away and when it answers again.
                logger.debug("the slot channel was cut (%s); subscribing again", exc)
                await asyncio.sleep(RETRY_SECONDS)
            finally:
                with contextlib.suppress(RedisError):
                    await pubsub.aclose()


class SharedSemaphore:
    """At most `max_in_flight` holders of one cap across every replica (an `rlm.SlotLimiter`).

    `in_flight` and `peak` count this replica's holders only; the cap counts all of them.
    """

    def __init__(self, limits: SharedLimits, key: str, cap: int) -> None:
        self.limits = limits
        self.key = key
        self.max_in_flight = cap
        self.in_flight = 0
        self.peak = 0
        self._waiters: deque[asyncio.Future[str]] = deque()
        self._wake = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def wake(self) -> None:
        self._wake.set()

    async def acquire(self) -> str:
        """Wait for a slot; returns the lease's token, to hand to `release`."""
        if not self._waiters:
            token = self.limits._token()
            with contextlib.suppress(RedisError):  # unreachable: wait in line and retry
                if await self.limits._try(self.key, self.max_in_flight, token) is None:
                    return self._took(token)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._serve_waiters(), name=f"wait {self.key}")
        try:
            return self._took(await future)
        except asyncio.CancelledError:
            if future in self._waiters:
                self._waiters.remove(future)
            elif future.done() and not future.cancelled():
                self.limits._give_back_later(self.key, future.result())
            raise

    async def release(self, token: str) -> None:
        self.in_flight -= 1
        await self.limits._give_back(self.key, token)

    async def try_acquire(self) -> str | None:
        """A slot's token if one is free now and nobody here waits for one, else None."""
        if self._waiters:
            return None
        token = self.limits._token()
        try:
            if await self.limits._try(self.key, self.max_in_flight, token) is None:
                return self._took(token)
        except RedisError:  # logged once per outage by `_try`
            pass
        return None

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        token = await self.acquire()
        try:
            yield
        finally:
            await asyncio.shield(self.release(token))

    def _took(self, token: str) -> str:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        return token

    async def _serve_waiters(self) -> None:
        """Ask Redis for the oldest waiter until none is left; sleep between refusals until
        a release is announced or the earliest lease would end."""
        while self._waiters:
            head = self._waiters[0]
            token = self.limits._token()
            self._wake.clear()
            try:
                wait = await self.limits._try(self.key, self.max_in_flight, token)
            except RedisError:  # logged once per outage by `_try`
                wait = RETRY_SECONDS
            if wait is None:
                if head.done():  # cancelled while we asked: the slot goes back
                    await self.limits._give_back(self.key, token)
                    continue
                self._waiters.remove(head)
                head.set_result(token)
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(wait, POLL_SECONDS)):
                    await self._wake.wait()


class SharedKeyedLimiter:
    """One `SharedSemaphore` per key (the bot keys by workspace), all with the same cap."""

    def __init__(self, limits: SharedLimits, kind: str, cap: int) -> None:
        self.limits = limits
        self.kind = kind
        self.max_in_flight = cap
        self._keys: set[str] = set()

    def get(self, key: str) -> SharedSemaphore:
        self._keys.add(key)
        return self.limits.semaphore(f"{self.kind}:{key}", self.max_in_flight)

    def keys(self) -> list[str]:
        return sorted(self._keys)
