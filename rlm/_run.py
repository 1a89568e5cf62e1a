"""One query's run of the RLM loop: the conversation with the root model, the REPL, the
budgets, the events and the trajectory."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Sequence
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

from rlm import _prompts as prompts
from rlm._budget import RunBudget
from rlm._events import (
    CodeExecuted,
    Event,
    EventCallback,
    IterationFinished,
    IterationStarted,
    RootReplied,
    RunFinished,
    SubcallProgress,
)
from rlm._parsing import find_code_blocks, find_final, truncate
from rlm._pricing import price_for
from rlm._subcalls import SubcallServer
from rlm.clients._base import Completion, Message
from rlm.lane import subcall_path
from rlm.repl import REPLSession
from rlm.repl._frames import cut_text

if TYPE_CHECKING:
    from rlm._core import RLM

logger = logging.getLogger("rlm")

Trajectory = list[dict[str, Any]]
MSG_BLOCK_NOT_RUN = (
    "Not run: the run's time budget (max_seconds) was used up before this block's turn."
)


class Run:
    """The state of one query: conversation, REPL, counters, trajectory."""

    def __init__(
        self,
        rlm: RLM,
        query: str,
        context: str | Sequence[str],
        callbacks: list[EventCallback],
        verbose: bool,
    ) -> None:
        self.rlm = rlm
        self.query = query
        self.context = context
        self.callbacks = callbacks
        self.verbose = verbose
        self.trajectory: Trajectory = []
        self.root_price = price_for(rlm.root_llm.spec, rlm.prices)
        self.budget = RunBudget(
            max_subcalls=rlm.max_subcalls,
            max_tokens=rlm.max_tokens,
            max_seconds=rlm.max_seconds,
            max_cost=rlm.max_cost,
            sub_price=price_for(rlm.sub_llm.spec, rlm.prices),
        )
        self.iteration = 0
        self.lane, self.gate, subcall = subcall_path(
            rlm.sub_llm, use_lane=rlm.subcall_lane, ceiling=rlm.provider_max_concurrency
        )
        self.subcalls = subcalls = SubcallServer(
            sub_llm=rlm.sub_llm,
            limiter=rlm.limiter,
            budget=self.budget,
            max_map_chunks=rlm.max_map_chunks,
            max_prompt_bytes=rlm.max_prompt_bytes,
            progress=self._progress if callbacks else None,
            subcall=subcall,
        )
        self.repl = REPLSession(
            context,
            llm_query=subcalls.llm_query,
            parallel_query=subcalls.parallel_query,
            subcalls_enabled=rlm.prompt_mode != "no_subcalls",
            cell_timeout=rlm.cell_timeout,
            limits=rlm.sandbox_limits,
            max_answer_chars=rlm.max_answer_chars,
        )

    # -- events ------------------------------------------------------------------------------

    async def emit(self, event: Event) -> None:
        for callback in self.callbacks:
            try:
                result = callback(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:  # a failing progress display must not end the run
                logger.exception("event callback failed on %s", type(event).__name__)

    async def _progress(self, done: int, total: int, failed: int) -> None:
        width = self.gate.width if self.gate is not None else None
        refused, refused_by = self.subcalls.refused, self.subcalls.refused_by
        await self.emit(
            SubcallProgress(self.iteration, done, total, failed, refused, refused_by, width)
        )

    def _spend_root(self, completion: Completion) -> None:
        self.budget.spend(
            completion.input_tokens,
            completion.output_tokens,
            cached_input_tokens=completion.cached_input_tokens,
            cache_write_tokens=completion.cache_write_tokens,
            price=self.root_price,
        )

    # -- the loop ----------------------------------------------------------------------------

    async def execute(self) -> tuple[str, Trajectory]:
        rlm = self.rlm
        messages: list[Message] = [
            {"role": "system", "content": prompts.system_prompt(rlm.prompt_mode)},
            {"role": "user", "content": prompts.first_prompt(self.query, self.context)},
        ]
        self.context = ""  # the worker holds it from here on
        repl_ready = asyncio.create_task(self.repl.start())  # loads while the root model thinks
        try:
            async with self.lane.opened() if self.lane is not None else nullcontext():
                answer, stopped_by = await self._loop(messages, repl_ready)
        finally:
            # Never cancel a worker mid-spawn: on Python 3.11 a cancelled subprocess start can
            # hang and leave the sandbox process behind. Its start is bounded by a timeout.
            await asyncio.wait([repl_ready])
            if not repl_ready.cancelled():
                repl_ready.exception()  # retrieved here; a start failure already surfaced
            await self.repl.close()
        budget = self.budget
        seconds = budget.seconds
        await self.emit(
            RunFinished(
                answer,
                len(self.trajectory),
                budget.subcalls,
                budget.input_tokens,
                budget.output_tokens,
                seconds,
                stopped_by,
                budget.cost,
                budget.cached_input_tokens,
            )
        )
        if self.verbose:
            print(
                f"\n=== answer after {len(self.trajectory)} iterations, {budget.subcalls} "
                f"sub-calls, {seconds:.1f} s ===\n{answer}",
                flush=True,
            )
        return answer, self.trajectory

    async def _loop(
        self, messages: list[Message], repl_ready: asyncio.Task[None]
    ) -> tuple[str, str | None]:
        rlm = self.rlm
        stopped_by: str | None = "max_iterations"
        for iteration in range(1, rlm.max_iterations + 1):
            limit = self.budget.limit_hit()
            if limit is not None:
                stopped_by = limit
                break
            answer, reply, feedback = await self._iteration(iteration, messages, repl_ready)
            if answer is not None:
                return answer, None
            messages.append({"role": "assistant", "content": reply})
            messages.append({"role": "user", "content": feedback})
        reasons = {
            "max_iterations": f"You have used all {rlm.max_iterations} replies.",
            "max_subcalls": "The run's sub-call budget is used up.",
            "max_tokens": "The run's token budget is used up.",
            "max_seconds": "The run's time budget is used up.",
            "max_cost": "The run's money budget is used up.",
        }
        return await self._last_chance(
            messages, reasons[stopped_by or "max_iterations"]
        ), stopped_by

    async def _iteration(
        self, iteration: int, messages: list[Message], repl_ready: asyncio.Task[None]
    ) -> tuple[str | None, str, str]:
        """One root reply and its code; returns (answer or None, reply, what to show next)."""
        self.iteration = iteration
        before = self.budget.spent()
        started = time.perf_counter()
        await self.emit(IterationStarted(iteration))
        completion = await self.rlm.root_llm.chat_async(messages)
        self._spend_root(completion)
        reply = completion.text
        await self.emit(RootReplied(iteration, reply))
        blocks = find_code_blocks(reply)
        outputs: list[str] = []
        in_code: tuple[dict[str, Any], int] | None = None  # FINAL in code, characters cut
        if blocks:
            await asyncio.shield(repl_ready)  # a cancelled run must not cancel the spawn
        per_block = max(1000, self.rlm.max_output_chars // max(1, len(blocks)))
        for code in blocks:
            time_left = self._time_left()
            if time_left is not None and time_left <= 0:
                outputs.append(MSG_BLOCK_NOT_RUN)  # nor any after it: the time is spent
                continue
            result = await self.repl.run_cell(code, time_left=time_left)
            output = truncate(result.output, per_block)
            outputs.append(output)
            if result.final is not None:
                in_code = (result.final, result.answer_left_out)
            await self.emit(CodeExecuted(iteration, code, output, result.seconds, result.error))
        answer, missing, left_out = await self._resolve_final(reply, in_code)
        feedback = prompts.continue_prompt(
            outputs,
            self.query,
            self.rlm.max_iterations - iteration,
            note=prompts.missing_variable_prompt(missing) if missing is not None else None,
        )
        spent = self.budget.spent() - before
        self.trajectory.append(
            {
                "iteration": iteration,
                "root_reply": reply,
                "code_blocks": blocks,
                "outputs": outputs,
                "subcalls": spent.subcalls,
                "input_tokens": spent.input_tokens,
                "output_tokens": spent.output_tokens,
                "cached_input_tokens": spent.cached_input_tokens,
                "cost": _dollars(spent.cost),
                "seconds": round(time.perf_counter() - started, 3),
            }
        )
        if left_out:
            self.trajectory[-1]["answer_cut"] = left_out
        await self.emit(
            IterationFinished(
                iteration,
                reply,
                tuple(blocks),
                tuple(outputs),
                spent.subcalls,
                spent.input_tokens,
                spent.output_tokens,
                time.perf_counter() - started,
                spent.cost,
                spent.cached_input_tokens,
            )
        )
        if self.verbose:
            self._print_iteration(self.trajectory[-1])
        return answer, reply, feedback

    def _time_left(self) -> float | None:
        """What is left of the run's `max_seconds`, or None without that limit."""
        if self.rlm.max_seconds is None:
            return None
        return self.rlm.max_seconds - self.budget.seconds

    async def _resolve_final(
        self, reply: str, in_code: tuple[dict[str, Any], int] | None
    ) -> tuple[str | None, str | None, int]:
        """(answer, None, characters cut from it), or (None, name of a missing FINAL_VAR
        variable, 0), or (None, None, 0). The REPL's host cut what came from the worker."""
        final = find_final(reply)
        kind, value, left_out = (final.kind, final.value, 0) if final else (None, None, 0)
        if in_code is not None and final is None:
            code_final, left_out = in_code
            kind = code_final["kind"]
            named = kind == "var" and code_final.get("name")
            value = code_final["name"] if named else code_final["value"]
            if kind == "var" and not named:
                kind = "text"  # FINAL_VAR(some_value) in code: the value itself
        if kind == "text" and value is not None:
            if final is not None:  # the root model's own text; the host cut the worker's
                value, left_out = cut_text(value, "answer", self.rlm.max_answer_chars)
            return value, None, left_out
        if kind == "var" and value is not None:
            found, left_out = await self.repl.fetch_variable(value)
            return (found, None, left_out) if found is not None else (None, value, 0)
        return None, None, 0

    async def _last_chance(self, messages: list[Message], reason: str) -> str:
        await self.emit(IterationStarted(len(self.trajectory) + 1))
        started = time.perf_counter()
        before = self.budget.spent()
        ask: list[Message] = [
            *messages,
            {"role": "user", "content": prompts.last_chance_prompt(reason)},
        ]
        completion = await self.rlm.root_llm.chat_async(ask)
        self._spend_root(completion)
        spent = self.budget.spent() - before
        final = find_final(completion.text)
        answer = final.value if final and final.kind == "text" else completion.text.strip()
        answer, left_out = cut_text(answer, "answer", self.rlm.max_answer_chars)
        iteration = len(self.trajectory) + 1
        seconds = round(time.perf_counter() - started, 3)
        entry: dict[str, Any] = {
            "iteration": iteration,
            "root_reply": completion.text,
            "code_blocks": [],
            "outputs": [],
            "subcalls": 0,
            "input_tokens": completion.input_tokens,
            "output_tokens": completion.output_tokens,
            "cached_input_tokens": completion.cached_input_tokens,
            "cost": _dollars(spent.cost),
            "seconds": seconds,
        }
        if left_out:
            entry["answer_cut"] = left_out
        self.trajectory.append(entry)
        await self.emit(
            IterationFinished(
                iteration,
                completion.text,
                (),
                (),
                0,
                completion.input_tokens,
                completion.output_tokens,
                seconds,
                spent.cost,
                completion.cached_input_tokens,
            )
        )
        return answer

    def _print_iteration(self, step: dict[str, Any]) -> None:
        bar = "=" * 72
        print(
            f"\n{bar}\niteration {step['iteration']}  ·  {step['subcalls']} sub-calls  ·  "
            f"{step['input_tokens'] + step['output_tokens']} tokens  ·  {step['seconds']:.2f} s"
            f"\n{bar}\n--- root model ---\n{truncate(step['root_reply'], 3000)}",
            flush=True,
        )
        for i, output in enumerate(step["outputs"], 1):
            print(f"--- output {i} ---\n{truncate(output, 2000)}", flush=True)


def _dollars(cost: float | None) -> float | None:
    # Micro-dollars are finer than any provider bills; the rounding keeps JSON short.
    return None if cost is None else round(cost, 8)
