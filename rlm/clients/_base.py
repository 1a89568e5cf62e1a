"""The one abstract base every provider interface implements.

A provider module implements `_complete` (one attempt, native async SDK client, SDK errors
mapped to `rlm` errors) and `_close_client`. Everything else — retries with backoff,
`Retry-After`, usage counters, the sync bridge, one SDK client per event loop — lives here
once.
"""

from __future__ import annotations

import asyncio
import random
import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol, TypedDict

from rlm._exceptions import ProviderError, RateLimitError
from rlm._sync import is_private_loop, on_loop_close, run_on_private_loop


class Message(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class Completion:
    """One model reply and what it cost.

    `input_tokens` counts every input token, including those the provider served from its
    prompt cache (`cached_input_tokens`) and, for Anthropic, those it wrote to the cache
    (`cache_write_tokens`): each is priced differently (see `rlm._pricing`).
    """

    text: str
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0


@dataclass(frozen=True)
class Usage:
    """Totals over every call an interface made."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    failed_calls: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


_NOTHING = Completion("")

Attempt = Callable[[], Awaitable[Completion]]


class Gate(Protocol):
    """What each attempt of a call passes through: the adaptive limit of its provider key."""

    async def call(self, attempt: Attempt) -> Completion: ...


class _OpenClient:
    """An SDK client and how to close it, once."""

    def __init__(self, client: Any, close: Callable[[Any], Awaitable[None]]) -> None:
        self.client = client
        self._close: Callable[[Any], Awaitable[None]] | None = close

    async def close(self) -> None:
        close, self._close = self._close, None
        if close is not None:
            await close(self.client)


def _close_soon(loop: asyncio.AbstractEventLoop, opened: _OpenClient) -> None:
    # An interface dropped while the private loop runs: its client goes with it.
    try:
        loop.call_soon_threadsafe(lambda: loop.create_task(opened.close()))
    except RuntimeError:  # the loop is closed already, and closed the client first
        pass


class LLMInterface(ABC):
    """A chat model behind a provider's official async SDK."""

    provider: ClassVar[str]

    def __init__(
        self,
        model: str,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float = 120.0,
        max_retries: int = 4,
        max_output_tokens: int = 4096,
        retry_base_delay: float = 0.5,
        retry_max_delay: float = 30.0,
    ) -> None:
        self.model = model
        self.api_key = api_key
        self.base_url = base_url
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_output_tokens = max_output_tokens
        self.retry_base_delay = retry_base_delay
        self.retry_max_delay = retry_max_delay
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _OpenClient] = (
            weakref.WeakKeyDictionary()
        )
        self._usage_lock = threading.Lock()
        self._usage = Usage()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r})"

    @property
    def spec(self) -> str:
        """The `provider:model` string naming this interface."""
        return f"{self.provider}:{self.model}"

    @property
    def usage(self) -> Usage:
        return self._usage

    # -- what a provider implements ---------------------------------------------------------

    @abstractmethod
    def _make_client(self) -> Any:
        """A new native async SDK client, with the SDK's own retries turned off."""

    @abstractmethod
    async def _complete(self, client: Any, messages: Sequence[Message]) -> Completion:
        """One attempt at a chat completion; SDK errors mapped to `ProviderError`s."""

    @staticmethod
    async def _close_client(client: Any) -> None:
        await client.close()

    # -- the shared machinery ---------------------------------------------------------------

    def _client(self) -> Any:
        """The SDK client for the running loop: async clients must not outlive their loop."""
        loop = asyncio.get_running_loop()
        opened = self._clients.get(loop)
        if opened is None:
            opened = self._clients[loop] = _OpenClient(self._make_client(), self._close_client)
            # The loop's cleanup holds the client, not the interface, which may go first.
            on_loop_close(loop, opened.close)
            if is_private_loop(loop):
                weakref.finalize(self, _close_soon, loop, opened)
        return opened.client

    async def aclose(self) -> None:
        """Close the SDK client opened on the running loop, if any."""
        opened = self._clients.pop(asyncio.get_running_loop(), None)
        if opened is not None:
            await opened.close()

    async def chat_async(self, messages: Sequence[Message]) -> Completion:
        """A chat completion over `messages`, retrying transient failures with backoff."""
        return await self.with_retries(lambda: self._complete(self._client(), messages))

    async def with_retries(self, attempt: Attempt, gate: Gate | None = None) -> Completion:
        """Run `attempt` until it succeeds, retrying transient failures: the one retry policy.

        Both ways of calling a provider use it, the SDK path (`chat_async`) and the engine's
        sub-call lane, so they retry, wait and count usage alike. Each attempt goes through
        `gate` when one is given; the backoff between attempts is slept outside it.
        """
        attempts = 0
        while True:
            attempts += 1
            try:
                completion = await (attempt() if gate is None else gate.call(attempt))
            except ProviderError as exc:
                exc.provider, exc.model = self.provider, self.model
                if not exc.retryable or attempts > self.max_retries:
                    exc.attempts = attempts
                    self._count(failed=True)
                    raise
                await asyncio.sleep(self._delay(attempts, exc))
                continue
            self._count(completion=completion)
            return completion

    def _delay(self, attempt: int, exc: ProviderError) -> float:
        if isinstance(exc, RateLimitError) and exc.retry_after is not None:
            return min(max(exc.retry_after, 0.0), self.retry_max_delay)
        backoff: float = self.retry_base_delay * 2.0 ** (attempt - 1)
        return min(backoff, self.retry_max_delay) * random.uniform(0.5, 1.0)

    def _count(self, *, completion: Completion | None = None, failed: bool = False) -> None:
        c = completion or _NOTHING
        with self._usage_lock:
            u = self._usage
            self._usage = Usage(
                calls=u.calls + (completion is not None),
                input_tokens=u.input_tokens + c.input_tokens,
                output_tokens=u.output_tokens + c.output_tokens,
                failed_calls=u.failed_calls + failed,
                cached_input_tokens=u.cached_input_tokens + c.cached_input_tokens,
                cache_write_tokens=u.cache_write_tokens + c.cache_write_tokens,
            )

    async def query_async(self, prompt: str) -> str:
        """The model's reply to one user prompt."""
        return (await self.chat_async([{"role": "user", "content": prompt}])).text

    def chat(self, messages: Sequence[Message]) -> Completion:
        return run_on_private_loop(self.chat_async(messages))

    def query(self, prompt: str) -> str:
        return run_on_private_loop(self.query_async(prompt))
