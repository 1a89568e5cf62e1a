"""The REPL's sub-calls for one run: `llm_query` and `parallel_query`, served by the host.

Work is paid for before it is done: a request over a size limit is refused before any call,
each call reserves its share of the run's budgets inside its limiter slot (see `_budget`), and
a prompt is built only once its call may go, so a map holds only its calls in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

from rlm._budget import PromptTemplate, RunBudget, map_sizes, prompt_size
from rlm._exceptions import ProviderError
from rlm._limiter import SlotLimiter
from rlm.clients._base import Completion, LLMInterface, Message

Subcall = Callable[[Sequence[Message]], Awaitable[Completion]]
Progress = Callable[[int, int, int], Awaitable[None]]  # (done, total, failed)


class SubcallServer:
    """Answers one run's `llm_query` and `parallel_query` requests from its REPL worker.

    A refused request (too many chunks, prompts too large) raises `RequestTooLarge`, which
    the REPL host reports into the model's code; a call the budget refuses, or that fails,
    answers "Error: ..." and the others go on.
    """

    def __init__(
        self,
        *,
        sub_llm: LLMInterface,
        limiter: SlotLimiter,
        budget: RunBudget,
        max_map_chunks: int,
        max_prompt_bytes: int,
        progress: Progress | None = None,
        subcall: Subcall | None = None,
    ) -> None:
        self.sub_llm = sub_llm
        # How one sub-call is made: the lane's, or the interface's own SDK path.
        self.subcall: Subcall = subcall or sub_llm.chat_async
        self.limiter = limiter
        self.budget = budget
        self.max_map_chunks = max_map_chunks
        self.max_prompt_bytes = max_prompt_bytes
        self.progress = progress
        # Of the current request's failed calls, how many the run's budget refused, and the
        # budget that did (a progress display names it rather than counting failures).
        self.refused = 0
        self.refused_by: str | None = None

    async def llm_query(self, prompt: str) -> str:
        size = prompt_size(prompt, max_bytes=self.max_prompt_bytes)
        self.refused, self.refused_by = 0, None
        text, ok = await self._call(size, lambda: prompt)
        if self.progress is not None:
            await self.progress(1, 1, 0 if ok else 1)
        return text

    async def parallel_query(self, template: str, chunks: list[str]) -> list[str]:
        shape = PromptTemplate(template)
        sizes = map_sizes(
            shape, chunks, max_chunks=self.max_map_chunks, max_bytes=self.max_prompt_bytes
        )
        total, done, failed = len(chunks), 0, 0
        self.refused, self.refused_by = 0, None
        results = [""] * total
        pending = iter(range(total))

        # As many workers as the limiter lets calls fly, each taking the next chunk: a map of
        # any length holds a handful of tasks, and only the prompts in flight exist at once.
        async def worker() -> None:
            nonlocal done, failed
            for i in pending:
                results[i], ok = await self._call(sizes[i], partial(shape.prompt, chunks[i]))
                done += 1
                failed += not ok
                if self.progress is not None:
                    await self.progress(done, total, failed)

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(total, self.limiter.max_in_flight)):
                    group.create_task(worker())
        except* Exception as errors:  # a bug, not a failed call: the map fails as one
            raise errors.exceptions[0] from None
        return results

    async def _call(self, prompt_bytes: int, build: Callable[[], str]) -> tuple[str, bool]:
        """One sub-call; its prompt is built only once its budget is reserved."""
        budget = self.budget
        refusal = budget.refusal(prompt_bytes)  # refused already: don't queue for a slot
        if refusal is not None:
            return self._refused(refusal), False
        async with self.limiter.slot():
            reservation = budget.reserve(prompt_bytes)
            if isinstance(reservation, str):
                return self._refused(reservation), False
            try:
                completion = await self.subcall([{"role": "user", "content": build()}])
            except ProviderError as exc:
                budget.release(reservation)  # the call was made, so its sub-call stays counted
                return f"Error: {exc}", False
            except BaseException:  # cancelled, or a bug: give the tokens back all the same
                budget.release(reservation)
                raise
            budget.settle(
                reservation,
                completion.input_tokens,
                completion.output_tokens,
                cached_input_tokens=completion.cached_input_tokens,
                cache_write_tokens=completion.cache_write_tokens,
                price=budget.sub_price,
            )
        return completion.text, True

    def _refused(self, why: str) -> str:
        self.refused += 1
        self.refused_by = self.budget.limit_hit() or "max_tokens"
        return why
