"""The RLM loop: the root model writes code, the REPL runs it, sub-models read the chunks."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from rlm import _prompts as prompts
from rlm._adaptive import DEFAULT_CEILING
from rlm._events import EventCallback
from rlm._exceptions import ConfigurationError
from rlm._limiter import Limiter, SlotLimiter
from rlm._pricing import Price, price_for, with_overrides
from rlm._run import Run, Trajectory
from rlm._sync import run_sync
from rlm.clients._base import LLMInterface
from rlm.repl import SandboxLimits

NO_PRICE = (
    "max_cost needs a price for {spec}, and there is none: give one with "
    'prices={{"{spec}": Price(input=..., cached_input=..., output=...)}} (dollars per million '
    "tokens)."
)


class RLM:
    """A Recursive Language Model: answers `query` over `context` of any size.

    Budgets per run (None: no limit): `max_subcalls`, `max_tokens`, `max_seconds` and
    `max_cost` (US dollars), spent before the work (see `rlm._budget`). Every call is priced
    from `prices` (`provider:model` to `Price`) laid over the shipped table
    (`rlm._pricing.DEFAULT_PRICES`); a model without a price makes the run's cost unknown,
    and `max_cost` then refuses to start. Per request from the REPL, refused before any
    sub-call: `max_map_chunks` chunks in one `parallel_query`, and `max_prompt_bytes` UTF-8
    bytes of one `llm_query` prompt or of all the prompts of one `parallel_query`.

    Sub-calls go out over the sub-call lane (`rlm.lane`: aiohttp, each provider's wire
    protocol, the interface's settings, retries and errors); `subcall_lane=False` sends them
    through the interface's SDK instead. Either way each attempt passes the adaptive limiter
    of the provider key, shared by every run in the process, whose width never passes
    `provider_max_concurrency`; `limiter` (or `max_parallel_calls`) caps this run's share.

    `max_seconds` also bounds each code block: a block's time limit is what is left of it, and
    the blocks of a reply after it is spent are not run. An answer longer than
    `max_answer_chars` is cut, with a note saying so, before the host holds more of it; the
    trajectory's entry then says how many characters were left out (`answer_cut`).
    """

    def __init__(
        self,
        root_llm: LLMInterface,
        sub_llm: LLMInterface | None = None,
        max_parallel_calls: int = 10,
        prompt_mode: prompts.PromptMode = "standard",
        *,
        max_iterations: int = 20,
        limiter: SlotLimiter | None = None,
        on_event: EventCallback | None = None,
        cell_timeout: float = 60.0,
        sandbox_limits: SandboxLimits | None = None,
        max_output_chars: int = 20_000,
        max_subcalls: int | None = None,
        max_tokens: int | None = None,
        max_seconds: float | None = None,
        max_map_chunks: int = 10_000,
        max_prompt_bytes: int = 64 * 1024 * 1024,
        subcall_lane: bool = True,
        provider_max_concurrency: int = DEFAULT_CEILING,
        max_answer_chars: int = 1_000_000,
        max_cost: float | None = None,
        prices: Mapping[str, Price] | None = None,
    ) -> None:
        if prompt_mode not in prompts.PROMPT_MODES:
            raise ConfigurationError(
                f"prompt_mode must be one of {', '.join(prompts.PROMPT_MODES)}, got {prompt_mode!r}"
            )
        if max_iterations < 1:
            raise ConfigurationError(f"max_iterations must be at least 1, got {max_iterations}")
        for name, value in (
            ("max_map_chunks", max_map_chunks),
            ("max_prompt_bytes", max_prompt_bytes),
            ("provider_max_concurrency", provider_max_concurrency),
            ("max_answer_chars", max_answer_chars),
        ):
            if value < 1:
                raise ConfigurationError(f"{name} must be at least 1, got {value}")
        self.root_llm = root_llm
        self.sub_llm = sub_llm or root_llm
        self.prompt_mode = prompt_mode
        self.max_iterations = max_iterations
        self.limiter = limiter or Limiter(max_parallel_calls)
        self.on_event = on_event
        self.cell_timeout = cell_timeout
        self.sandbox_limits = sandbox_limits or SandboxLimits()
        self.max_output_chars = max_output_chars
        self.max_subcalls = max_subcalls
        self.max_tokens = max_tokens
        self.max_seconds = max_seconds
        self.max_map_chunks = max_map_chunks
        self.max_prompt_bytes = max_prompt_bytes
        self.subcall_lane = subcall_lane
        self.provider_max_concurrency = provider_max_concurrency
        self.max_answer_chars = max_answer_chars
        self.prices = with_overrides(prices)
        self.max_cost = max_cost
        if max_cost is not None:
            if max_cost <= 0:
                raise ConfigurationError(f"max_cost must be more than 0, got {max_cost}")
            for llm in (self.root_llm, self.sub_llm):
                if price_for(llm.spec, self.prices) is None:
                    raise ConfigurationError(NO_PRICE.format(spec=llm.spec))

    @property
    def max_parallel_calls(self) -> int:
        return self.limiter.max_in_flight

    def query(
        self,
        query: str,
        context: str | Sequence[str],
        verbose: bool = False,
        on_event: EventCallback | None = None,
    ) -> tuple[str, Trajectory]:
        """Answer `query` over `context`; returns (answer, trajectory). Safe in any thread."""
        return run_sync(self.query_async(query, context, verbose=verbose, on_event=on_event))

    async def query_async(
        self,
        query: str,
        context: str | Sequence[str],
        verbose: bool = False,
        on_event: EventCallback | None = None,
    ) -> tuple[str, Trajectory]:
        if not isinstance(query, str) or not query.strip():
            raise ConfigurationError("The question is empty: ask something about the context.")
        if not isinstance(context, str):
            if not isinstance(context, Sequence) or not all(isinstance(c, str) for c in context):
                raise ConfigurationError("context must be a str or a list of str.")
        callbacks = [cb for cb in (self.on_event, on_event) if cb is not None]
        return await Run(self, query.strip(), context, callbacks, verbose).execute()


def write_trajectory_jsonl(
    trajectory: Iterable[dict[str, Any]], file: str | Path | IO[str]
) -> None:
    """Write one JSON object per iteration, one per line."""
    if isinstance(file, (str, Path)):
        with open(file, "w", encoding="utf-8") as f:
            write_trajectory_jsonl(trajectory, f)
        return
    for step in trajectory:
        file.write(json.dumps(step, ensure_ascii=False) + "\n")
