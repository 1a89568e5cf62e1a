"""The adaptive limit per provider endpoint and key, under the per-workspace caps.

A provider's rate limit is per key, and every workspace usually shares one key, so one
`ProviderLimiter` per endpoint and key is shared by every run in the process. Its width
follows AIMD (`AimdPolicy`, pure arithmetic): it grows while calls succeed, halves on a 429 or
503, shrinks when latency climbs well above its recent baseline, and never passes its
ceiling. A `Retry-After` from the provider holds every caller on the key, not only the one
that got it.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
import urllib.parse
from collections import deque
from dataclasses import dataclass

from rlm._exceptions import ConfigurationError, ProviderError, RateLimitError
from rlm.clients._base import Attempt, Completion

DEFAULT_CEILING = 256
# Statuses that say "too much, slow down" rather than "this request is wrong".
_THROTTLE_STATUSES = frozenset({429, 503, 529})


class AimdPolicy:
    """When the width grows and when it shrinks; no I/O and no locks.

    Slow start doubles the width each round trip until the first sign of trouble. A 429 or
    503 cuts it by `decrease`, a smoothed latency `latency_factor` times its baseline by
    `latency_decrease`, each at most once per round trip (a signal from a call sent before
    the last cut says nothing about the new width). After a cut it probes back up gently,
    a quarter of a call per round trip at first, bolder the longer no trouble comes.
    """

    def __init__(
        self,
        *,
        ceiling: int,
        initial: int = 32,
        decrease: float = 0.7,
        latency_decrease: float = 0.8,
        latency_factor: float = 3.0,
        latency_slack: float = 0.05,
    ) -> None:
        self.ceiling = ceiling
        self.width = float(min(initial, ceiling))
        self.slow_start = True
        self.decrease = decrease
        self.latency_decrease = latency_decrease
        self.latency_factor = latency_factor
        self.latency_slack = latency_slack  # seconds: loopback-fast calls never look slow
        self.baseline: float | None = None  # the recent lowest latency, creeping up slowly
        self.smoothed: float | None = None
        self.last_decrease = float("-inf")
        self.growth = 1.0  # calls added per round trip after slow start

    def on_success(self, *, started: float, latency: float, in_flight: int) -> None:
        self._observe(latency)
        assert self.baseline is not None and self.smoothed is not None
        if self.smoothed > max(
            self.baseline * self.latency_factor, self.baseline + self.latency_slack
        ):
            self._shrink(started, self.latency_decrease)
            return
        # Grow only when the width is what holds calls back, not while it sits half used.
        if in_flight + 1 < self.width / 2:
            return
        if self.slow_start:
            step = 1.0
        else:
            # Back near a width that was refused, probe gently; the longer it holds, the
            # bolder: about a quarter of a call per round trip, doubling every few trips.
            step = self.growth / self.width
            self.growth = min(1.0, self.growth * (1.0 + 0.2 / self.width))
        self.width = min(float(self.ceiling), self.width + step)

    def on_throttle(self, *, started: float, in_flight: int) -> None:
        """A 429 or 503: cut once per round trip, and never stay above what got through.

        The calls still in flight when a 429 comes back are about as many as the provider
        accepts at once: a burst far past it (the first one, say) is cut to size at once,
        not halved round trip after round trip while most of it is refused.
        """
        self._shrink(started, self.decrease)
        if in_flight < self.width:
            self.slow_start = False
            self.width = max(1.0, float(in_flight))

    def _shrink(self, started: float, factor: float) -> None:
        if started < self.last_decrease:
            return
        self.slow_start = False
        self.growth = 0.25
        self.width = max(1.0, self.width * factor)
        self.last_decrease = _now()

    def _observe(self, latency: float) -> None:
        if self.baseline is None or latency < self.baseline:
            self.baseline = latency
        else:
            self.baseline += (latency - self.baseline) * 0.002
        self.smoothed = (
            latency if self.smoothed is None else self.smoothed + (latency - self.smoothed) * 0.1
        )


def _now() -> float:
    return time.monotonic()


@dataclass(frozen=True)
class ProviderLimit:
    """What one provider limiter looks like now, for `/rlm usage` and the CLI."""

    name: str  # provider and host, never the key
    width: int
    ceiling: int
    in_flight: int
    waiting: int
    throttled: int  # 429/503 answers seen since start
    held_for: float  # seconds left of a provider's Retry-After


_Waiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]


class ProviderLimiter:
    """The adaptive gate every attempt at a call on one provider key passes through.

    Safe to share between runs, event loops and threads, like `Limiter`.
    """

    def __init__(self, name: str, *, ceiling: int = DEFAULT_CEILING, initial: int = 32) -> None:
        if ceiling < 1:
            raise ConfigurationError(
                f"the provider concurrency ceiling must be at least 1, got {ceiling}"
            )
        self.name = name
        self.policy = AimdPolicy(ceiling=ceiling, initial=initial)
        self._lock = threading.Lock()
        self._in_flight = 0
        self._waiters: deque[_Waiter] = deque()
        self._held_until = 0.0
        self.throttled = 0
        self.peak = 0

    @property
    def width(self) -> int:
        return int(self.policy.width)

    @property
    def ceiling(self) -> int:
        return self.policy.ceiling

    @ceiling.setter
    def ceiling(self, value: int) -> None:
        with self._lock:
            self.policy.ceiling = value
            self.policy.width = min(self.policy.width, float(value))

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def snapshot(self) -> ProviderLimit:
        return ProviderLimit(
            self.name,
            self.width,
            self.ceiling,
            self._in_flight,
            len(self._waiters),
            self.throttled,
            max(0.0, self._held_until - _now()),
        )

    async def call(self, attempt: Attempt) -> Completion:
        """One attempt inside a slot; its outcome moves the width."""
        await self._acquire()
        started = _now()
        try:
            completion = await attempt()
        except ProviderError as exc:
            self._release(started, exc)
            raise
        except BaseException:
            self._release(started, None)
            raise
        self._release(started, completion)
        return completion

    async def _wait_out_hold(self) -> None:
        # A loop, not one sleep: another Retry-After may move the deadline meanwhile.
        while (left := self._held_until - _now()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(left)

    async def _acquire(self) -> None:
        await self._wait_out_hold()
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._in_flight < self.width and not self._waiters:
                self._take()
                future = None
            else:
                future = loop.create_future()
                waiter = (loop, future)
                self._waiters.append(waiter)
        if future is not None:
            try:
                await future
            except asyncio.CancelledError:
                with self._lock:
                    if waiter in self._waiters:
                        self._waiters.remove(waiter)
                        raise
                if future.done() and not future.cancelled():
                    self._release(_now(), None)
                raise
        try:
            # A Retry-After that came while this caller queued holds it too, slot in hand.
            await self._wait_out_hold()
        except BaseException:
            self._release(_now(), None)
            raise

    def _take(self) -> None:
        self._in_flight += 1
        self.peak = max(self.peak, self._in_flight)

    def _release(self, started: float, outcome: Completion | ProviderError | None) -> None:
        with self._lock:
            if isinstance(outcome, Completion):
                self.policy.on_success(
                    started=started, latency=_now() - started, in_flight=self._in_flight - 1
                )
            elif isinstance(outcome, ProviderError) and outcome.status in _THROTTLE_STATUSES:
                self.throttled += 1
                self.policy.on_throttle(started=started, in_flight=self._in_flight - 1)
                if isinstance(outcome, RateLimitError) and outcome.retry_after:
                    self._held_until = max(self._held_until, _now() + outcome.retry_after)
            self._in_flight -= 1
            while self._waiters and self._in_flight < self.width:
                loop, future = self._waiters.popleft()
                try:
                    loop.call_soon_threadsafe(self._hand_over, future)
                except RuntimeError:  # that waiter's loop is closed: try the next one
                    continue
                self._take()

    def _hand_over(self, future: asyncio.Future[None]) -> None:
        if future.done():  # cancelled while the slot was on its way
            self._release(_now(), None)
        else:
            future.set_result(None)


_registry: dict[tuple[str, str, str], ProviderLimiter] = {}
_registry_lock = threading.Lock()


def provider_limiter(
    provider: str, endpoint: str, api_key: str, *, ceiling: int = DEFAULT_CEILING
) -> ProviderLimiter:
    """The process-wide limiter for `api_key` at `endpoint`, created on first use.

    A later call with another ceiling moves the ceiling: the last configuration wins.
    """
    # Only a digest of the key is kept, so the registry never holds a secret.
    digest = hashlib.sha256(api_key.encode()).hexdigest()[:16]
    with _registry_lock:
        limiter = _registry.get((provider, endpoint, digest))
        if limiter is None:
            limiter = ProviderLimiter(f"{provider} {_host(endpoint)}", ceiling=ceiling)
            _registry[(provider, endpoint, digest)] = limiter
    if limiter.ceiling != ceiling:
        limiter.ceiling = ceiling
    return limiter


def _host(url: str) -> str:
    # Host and port only: a base URL may carry credentials (user:password@) or a path.
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "?"
    return f"{host}:{parts.port}" if parts.port else host


def provider_limits() -> list[ProviderLimit]:
    """A snapshot of every provider limiter in the process, busiest first."""
    with _registry_lock:
        limiters = list(_registry.values())
    return sorted((lim.snapshot() for lim in limiters), key=lambda s: -s.in_flight)
