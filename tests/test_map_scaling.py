"""The host's side of a long map stays linear: each prompt built once, a handful of tasks."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from scripted_llm import ScriptedLLM

from rlm import Limiter, Message
from rlm._budget import PromptTemplate, RunBudget
from rlm._subcalls import SubcallServer
from rlm.clients._base import Completion


async def test_a_long_map_builds_each_prompt_once_with_few_tasks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    chunks = [f"chunk {i} " * 20 for i in range(5000)]
    built = 0
    original = PromptTemplate.prompt

    def counting(self: PromptTemplate, chunk: str) -> str:
        nonlocal built
        built += 1
        return original(self, chunk)

    monkeypatch.setattr(PromptTemplate, "prompt", counting)
    most_tasks = 0
    progress: list[tuple[int, int, int]] = []

    async def subcall(messages: Sequence[Message]) -> Completion:
        nonlocal most_tasks
        most_tasks = max(most_tasks, len(asyncio.all_tasks()))
        await asyncio.sleep(0)
        return Completion(messages[-1]["content"][:12], 1, 1)

    async def on_progress(done: int, total: int, failed: int) -> None:
        progress.append((done, total, failed))

    server = SubcallServer(
        sub_llm=ScriptedLLM(),
        limiter=Limiter(8),
        budget=RunBudget(),
        max_map_chunks=10_000,
        max_prompt_bytes=64 * 1024 * 1024,
        progress=on_progress,
        subcall=subcall,
    )
    results = await server.parallel_query("Read: {chunk}", chunks)
    assert results == [f"Read: chunk {i}"[:12] for i in range(5000)]
    assert built == len(chunks)  # never a copy of every prompt, never one twice
    assert most_tasks <= 8 + 2  # the workers, the test's own task and the loop's spare
    assert len(progress) == len(chunks) and progress[-1] == (5000, 5000, 0)
