"""The sub-call lane: the engine's sub-calls over one aiohttp session per loop and endpoint.

The provider SDKs spend two to three milliseconds of host CPU on each call; a plain aiohttp
POST of the same bytes spends a tenth of that, which is what a wide `parallel_query` is
bound by. The lane speaks each provider's wire protocol (`_wire`), reads replies and errors
into the same `Completion`s and typed errors as the SDK path, and retries through the
interface's own `with_retries`, so the two paths behave alike on every outcome.
"""

from __future__ import annotations

import asyncio
import threading
import urllib.parse
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp

from rlm._adaptive import ProviderLimiter, provider_limiter
from rlm.clients import _errors
from rlm.clients._base import Completion, LLMInterface, Message
from rlm.lane._wire import Endpoint, endpoint_for, read_failure, read_success, request_body

Subcall = Callable[[Sequence[Message]], Awaitable[Completion]]


class _Shared:
    """One session and how many lanes on its loop are using it."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.users = 0


class _Sessions:
    """One `ClientSession` per event loop and endpoint origin, open while a lane uses it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Shared]] = (
            weakref.WeakKeyDictionary()
        )

    def take(self, origin: str, pool_size: int) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        with self._lock:
            shared = self._by_loop.setdefault(loop, {}).get(origin)
            if shared is None or shared.session.closed:
                connector = aiohttp.TCPConnector(
                    limit=pool_size, keepalive_timeout=30.0, ttl_dns_cache=300
                )
                # No trust_env: it looks up netrc and proxies in a thread on every request.
                # The proxy is resolved once per lane instead (`Endpoint.proxy`).
                session = aiohttp.ClientSession(
                    connector=connector, cookie_jar=aiohttp.DummyCookieJar()
                )
                shared = self._by_loop[loop][origin] = _Shared(session)
            shared.users += 1
            return shared.session

    async def give_back(self, origin: str) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            sessions = self._by_loop.get(loop, {})
            shared = sessions.get(origin)
            if shared is None:
                return
            shared.users -= 1
            if shared.users > 0:
                return
            del sessions[origin]
        await shared.session.close()


_sessions = _Sessions()


@dataclass
class SubcallLane:
    """Sub-calls for one interface, through its provider limiter when one is given."""

    llm: LLMInterface
    endpoint: Endpoint
    gate: ProviderLimiter | None = None
    pool_size: int = 256

    def __post_init__(self) -> None:
        self._timeout = aiohttp.ClientTimeout(total=self.llm.timeout)
        self._session: aiohttp.ClientSession | None = None

    @asynccontextmanager
    async def opened(self) -> AsyncIterator[SubcallLane]:
        """Hold the loop's session for this endpoint open while the block runs."""
        self._session = _sessions.take(self.endpoint.origin, self.pool_size)
        try:
            yield self
        finally:
            self._session = None
            await _sessions.give_back(self.endpoint.origin)

    async def complete(self, messages: Sequence[Message]) -> Completion:
        """One sub-call, with the interface's retries, `Retry-After` and usage counting."""
        return await self.llm.with_retries(lambda: self._attempt(messages), self.gate)

    async def _attempt(self, messages: Sequence[Message]) -> Completion:
        session = self._session
        if session is None:
            raise RuntimeError("SubcallLane.complete() outside `async with lane.opened()`")
        endpoint, llm = self.endpoint, self.llm
        body = request_body(endpoint.provider, llm.model, messages, llm.max_output_tokens)
        try:
            async with session.post(
                endpoint.url,
                data=body,
                headers=endpoint.headers,
                timeout=self._timeout,
                allow_redirects=False,
                proxy=endpoint.proxy,
            ) as response:
                payload = await response.read()
                status, reason, headers = response.status, response.reason, response.headers
        except TimeoutError as exc:
            raise _errors.timeout_error(f"no reply within {llm.timeout:g} s") from exc
        except aiohttp.ClientError as exc:
            detail = _errors.describe(None, str(exc) or type(exc).__name__)
            raise _errors.connection_error(detail) from exc
        # google-genai takes only 200 as success; the other two SDKs any 2xx.
        ok = status == 200 if endpoint.provider == "gemini" else 200 <= status < 300
        if not ok:
            raise read_failure(endpoint, status, reason or "", payload, headers)
        return read_success(endpoint.provider, payload)


def lane_for(llm: LLMInterface, *, ceiling: int) -> SubcallLane | None:
    """The lane for `llm`, or None if the lane does not speak its provider.

    An interface that changes how a call is made (its own `chat_async`) keeps its way.
    """
    if type(llm).chat_async is not LLMInterface.chat_async:
        return None
    try:
        endpoint = endpoint_for(llm)
    except ValueError:
        return None
    url = urllib.parse.urlsplit(endpoint.url)
    # Credentials in the URL mean HTTP auth the SDK's client applies its own way: leave it.
    if url.scheme not in ("http", "https") or url.username or url.password:
        return None
    return SubcallLane(llm, endpoint, gate_for(endpoint, ceiling=ceiling), pool_size=ceiling)


def subcall_path(
    llm: LLMInterface, *, use_lane: bool, ceiling: int
) -> tuple[SubcallLane | None, ProviderLimiter | None, Subcall]:
    """(lane to open, provider limiter, how one sub-call is made) for sub-calls to `llm`.

    A provider the lane does not speak keeps its own calls, ungated; with the lane turned
    off, calls go through the SDK path, still through the provider key's limiter.
    """
    lane = lane_for(llm, ceiling=ceiling)
    if lane is None or lane.gate is None:
        return None, None, llm.chat_async
    if use_lane:
        return lane, lane.gate, lane.complete
    return None, lane.gate, sdk_subcall(llm, lane.gate)


def sdk_subcall(llm: LLMInterface, gate: ProviderLimiter) -> Subcall:
    """Sub-calls through `llm`'s SDK path, each attempt through `gate` (the lane turned off)."""

    async def subcall(messages: Sequence[Message]) -> Completion:
        return await llm.with_retries(lambda: llm._complete(llm._client(), messages), gate)

    return subcall


def gate_for(endpoint: Endpoint, *, ceiling: int) -> ProviderLimiter:
    return provider_limiter(endpoint.provider, endpoint.url, endpoint.key, ceiling=ceiling)


__all__ = [
    "Endpoint",
    "Subcall",
    "SubcallLane",
    "endpoint_for",
    "gate_for",
    "lane_for",
    "sdk_subcall",
]
