"""Typed events the RLM loop reports to an optional callback while it runs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class IterationStarted:
    iteration: int


@dataclass(frozen=True)
class RootReplied:
    """The root model's reply for an iteration arrived; its code runs next."""

    iteration: int
    reply: str


@dataclass(frozen=True)
class CodeExecuted:
    iteration: int
    code: str
    output: str
    seconds: float
    error: bool


@dataclass(frozen=True)
class SubcallProgress:
    """Sub-calls of one `parallel_query` (or one `llm_query`, total 1) done so far.

    `provider_width` is how many calls the provider key's adaptive limiter lets fly now
    (None when sub-calls do not go through one).
    """

    iteration: int
    done: int
    total: int
    failed: int
    # Of `failed`, how many the run's budget refused, and which budget ("max_subcalls", ...).
    refused: int = 0
    refused_by: str | None = None
    provider_width: int | None = None


@dataclass(frozen=True)
class IterationFinished:
    """One iteration done: the root model's reply, the code it ran and what that printed."""

    iteration: int
    root_reply: str
    code_blocks: tuple[str, ...]
    outputs: tuple[str, ...]
    subcalls: int
    input_tokens: int
    output_tokens: int
    seconds: float
    cost: float | None = None  # US dollars; None when a model used has no price
    cached_input_tokens: int = 0  # of input_tokens, served from the provider's cache


@dataclass(frozen=True)
class RunFinished:
    answer: str
    iterations: int
    subcalls: int
    input_tokens: int
    output_tokens: int
    seconds: float
    stopped_by: str | None  # None: the root model answered; else the limit that stopped it
    cost: float | None = None  # US dollars; None when a model used has no price
    cached_input_tokens: int = 0  # of input_tokens, served from the provider's cache


Event = (
    IterationStarted
    | RootReplied
    | CodeExecuted
    | SubcallProgress
    | IterationFinished
    | RunFinished
)
EventCallback = Callable[[Event], Awaitable[None] | None]
