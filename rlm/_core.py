"""The RLM loop: the root model writes code, the REPL runs it, sub-models read the chunks."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

from rlm import _prompts as prompts
from rlm._events import (
    CodeExecuted,
    Event,
    EventCallback,
    IterationFinished,
    IterationStarted,
    RunFinished,
    SubcallProgress,
)
from rlm._exceptions import ConfigurationError, ProviderError
from rlm._limiter import Limiter
from rlm._parsing import find_code_blocks, find_final, truncate
from rlm._sync import run_sync
from rlm.clients._base import LLMInterface, Message
from rlm.repl import REPLSession, SandboxLimits

logger = logging.getLogger("rlm")

Trajectory = list[dict[str, Any]]


class RLM:
    """A Recursive Language Model: answers `query` over `context` of any size."""

    def __init__(
        self,
        root_llm: LLMInterface,
        sub_llm: LLMInterface | None = None,
        max_parallel_calls: int = 10,
        prompt_mode: prompts.PromptMode = "standard",
        *,
        max_iterations: int = 20,
        limiter: Limiter | None = None,
        on_event: EventCallback | None = None,
        cell_timeout: float = 60.0,
        sandbox_limits: SandboxLimits | None = None,
        max_output_chars: int = 20_000,
        max_subcalls: int | None = None,
        max_tokens: int | None = None,
        max_seconds: float | None = None,
    ) -> None:
        if prompt_mode not in prompts.PROMPT_MODES:
            raise ConfigurationError(
                f"prompt_mode must be one of {', '.join(prompts.PROMPT_MODES)}, got {prompt_mode!r}"
            )
        if max_iterations < 1:
            raise ConfigurationError(f"max_iterations must be at least 1, got {max_iterations}")
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
        self.subcalls = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.iteration = 0
        self.iter_subcalls = 0
        self.iter_tokens = [0, 0]
        self.started = time.perf_counter()
        self.repl = REPLSession(
            context,
            llm_query=self.llm_query,
            parallel_query=self.parallel_query,
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

    # -- sub-calls, served to the REPL -------------------------------------------------------

    def _budget_hit(self) -> str | None:
        rlm = self.rlm
        if rlm.max_subcalls is not None and self.subcalls >= rlm.max_subcalls:
            return "max_subcalls"
        if rlm.max_tokens is not None and self.input_tokens + self.output_tokens >= rlm.max_tokens:
            return "max_tokens"
        if rlm.max_seconds is not None and time.perf_counter() - self.started >= rlm.max_seconds:
            return "max_seconds"
        return None

    async def _subcall(self, prompt: str) -> tuple[str, bool]:
        limit = self._budget_hit()
        if limit is not None:
            return f"Error: the run's {limit} budget is used up; no more sub-calls.", False
        self.subcalls += 1
        self.iter_subcalls += 1
        async with self.rlm.limiter.slot():
            try:
                completion = await self.rlm.sub_llm.chat_async(
                    [{"role": "user", "content": prompt}]
                )
            except ProviderError as exc:
                return f"Error: {exc}", False
        self._add_tokens(completion.input_tokens, completion.output_tokens)
        return completion.text, True

    def _add_tokens(self, input_tokens: int, output_tokens: int) -> None:
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.iter_tokens[0] += input_tokens
        self.iter_tokens[1] += output_tokens

    async def llm_query(self, prompt: str) -> str:
        text, ok = await self._subcall(prompt)
        if self.callbacks:
            await self.emit(SubcallProgress(self.iteration, 1, 1, 0 if ok else 1))
        return text

    async def parallel_query(self, template: str, chunks: list[str]) -> list[str]:
        total, done, failed = len(chunks), 0, 0
        with_chunk = "{chunk}" in template

        async def one(chunk: str) -> str:
            nonlocal done, failed
            prompt = template.replace("{chunk}", chunk) if with_chunk else f"{template}\n\n{chunk}"
            text, ok = await self._subcall(prompt)
            done += 1
            failed += not ok
            if self.callbacks:
                await self.emit(SubcallProgress(self.iteration, done, total, failed))
            return text

        return list(await asyncio.gather(*(one(c) for c in chunks)))

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
            answer, stopped_by = await self._loop(messages, repl_ready)
        finally:
            # Never cancel a worker mid-spawn: on Python 3.11 a cancelled subprocess start can
            # hang and leave the sandbox process behind. Its start is bounded by a timeout.
            await asyncio.wait([repl_ready])
            if not repl_ready.cancelled():
                repl_ready.exception()  # retrieved here; a start failure already surfaced
            await self.repl.close()
        seconds = time.perf_counter() - self.started
        await self.emit(
            RunFinished(
                answer,
                len(self.trajectory),
                self.subcalls,
                self.input_tokens,
                self.output_tokens,
                seconds,
                stopped_by,
            )
        )
        if self.verbose:
            print(
                f"\n=== answer after {len(self.trajectory)} iterations, {self.subcalls} "
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
            limit = self._budget_hit()
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
        self.iter_subcalls, self.iter_tokens = 0, [0, 0]
        started = time.perf_counter()
        await self.emit(IterationStarted(iteration))
        completion = await self.rlm.root_llm.chat_async(messages)
        self._add_tokens(completion.input_tokens, completion.output_tokens)
        reply = completion.text
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
        self.trajectory.append(
            {
                "iteration": iteration,
                "root_reply": reply,
                "code_blocks": blocks,
                "outputs": outputs,
                "subcalls": self.iter_subcalls,
                "input_tokens": self.iter_tokens[0],
                "output_tokens": self.iter_tokens[1],
                "seconds": round(time.perf_counter() - started, 3),
            }
        )
        await self.emit(
            IterationFinished(
                iteration,
                reply,
                tuple(blocks),
                tuple(outputs),
                self.iter_subcalls,
                self.iter_tokens[0],
                self.iter_tokens[1],
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
        self.iter_subcalls, self.iter_tokens = 0, [0, 0]
        ask: list[Message] = [
            *messages,
            {"role": "user", "content": prompts.last_chance_prompt(reason)},
        ]
        completion = await self.rlm.root_llm.chat_async(ask)
        self._add_tokens(completion.input_tokens, completion.output_tokens)
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
