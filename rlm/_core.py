"""The RLM loop: the root model writes code, the REPL runs it, sub-models read the chunks."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import IO, Any

from rlm import _prompts as prompts
from rlm._adaptive import DEFAULT_CEILING
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
from rlm._exceptions import ConfigurationError
from rlm._limiter import Limiter, SlotLimiter
from rlm._parsing import find_code_blocks, find_final, truncate
from rlm._subcalls import SubcallServer
from rlm._sync import run_sync
from rlm.clients._base import LLMInterface, Message
from rlm.lane import subcall_path
from rlm.repl import REPLSession, SandboxLimits

logger = logging.getLogger("rlm")

Trajectory = list[dict[str, Any]]


class RLM:
    """A Recursive Language Model: answers `query` over `context` of any size.

    Budgets per run (None: no limit): `max_subcalls`, `max_tokens`, `max_seconds`, spent
    before the work (see `rlm._budget`). Per request from the REPL, refused before any
    sub-call: `max_map_chunks` chunks in one `parallel_query`, and `max_prompt_bytes` UTF-8
    bytes of one `llm_query` prompt or of all the prompts of one `parallel_query`.

    Sub-calls go out over the sub-call lane (`rlm.lane`: aiohttp, each provider's wire
    protocol, the interface's settings, retries and errors); `subcall_lane=False` sends them
    through the interface's SDK instead. Either way each attempt passes the adaptive limiter
    of the provider key, shared by every run in the process, whose width never passes
    `provider_max_concurrency`; `limiter` (or `max_parallel_calls`) caps this run's share.
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
        return await _Run(self, query.strip(), context, callbacks, verbose).execute()


class _Run:
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
        self.budget = RunBudget(
            max_subcalls=rlm.max_subcalls, max_tokens=rlm.max_tokens, max_seconds=rlm.max_seconds
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
        self.budget.spend(completion.input_tokens, completion.output_tokens)
        reply = completion.text
        await self.emit(RootReplied(iteration, reply))
        blocks = find_code_blocks(reply)
        outputs: list[str] = []
        in_code_final: dict[str, Any] | None = None
        if blocks:
            await asyncio.shield(repl_ready)  # a cancelled run must not cancel the spawn
        per_block = max(1000, self.rlm.max_output_chars // max(1, len(blocks)))
        for code in blocks:
            result = await self.repl.run_cell(code)
            output = truncate(result.output, per_block)
            outputs.append(output)
            in_code_final = result.final or in_code_final
            await self.emit(CodeExecuted(iteration, code, output, result.seconds, result.error))
        answer, missing = await self._resolve_final(reply, in_code_final)
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
                "seconds": round(time.perf_counter() - started, 3),
            }
        )
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
            )
        )
        if self.verbose:
            self._print_iteration(self.trajectory[-1])
        return answer, reply, feedback

    async def _resolve_final(
        self, reply: str, in_code: dict[str, Any] | None
    ) -> tuple[str | None, str | None]:
        """(answer, None), or (None, name of a missing FINAL_VAR variable), or (None, None)."""
        final = find_final(reply)
        kind, value = (final.kind, final.value) if final else (None, None)
        if in_code is not None and final is None:
            kind = in_code["kind"]
            value = in_code["name"] if kind == "var" and in_code.get("name") else in_code["value"]
            if kind == "var" and not in_code.get("name"):
                kind = "text"  # FINAL_VAR(some_value) in code: the value itself
        if kind == "text":
            return value, None
        if kind == "var" and value is not None:
            found = await self.repl.get_variable(value)
            return (found, None) if found is not None else (None, value)
        return None, None

    async def _last_chance(self, messages: list[Message], reason: str) -> str:
        await self.emit(IterationStarted(len(self.trajectory) + 1))
        started = time.perf_counter()
        ask: list[Message] = [
            *messages,
            {"role": "user", "content": prompts.last_chance_prompt(reason)},
        ]
        completion = await self.rlm.root_llm.chat_async(ask)
        self.budget.spend(completion.input_tokens, completion.output_tokens)
        final = find_final(completion.text)
        answer = final.value if final and final.kind == "text" else completion.text.strip()
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
            "seconds": seconds,
        }
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
