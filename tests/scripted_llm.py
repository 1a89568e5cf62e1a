"""A queue-driven model for unit tests of the loop; wire-level tests use tests/fake_llm.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from rlm.clients._base import Completion, LLMInterface, Message

Reply = str | Callable[[Sequence[Message]], str]


class ScriptedLLM(LLMInterface):
    """Answers from a queue of replies; when it is empty, with `fallback(prompt)`."""

    provider = "scripted"

    def __init__(
        self,
        *replies: Reply,
        fallback: Callable[[str], str] = lambda p: f"[sub] {p[:200]}",
        latency: float = 0.0,
    ) -> None:
        super().__init__("scripted")
        self.replies: list[Reply] = list(replies)
        self.fallback = fallback
        self.latency = latency
        self.seen: list[list[Message]] = []

    def _make_client(self) -> Any:
        return None

    async def _close_client(self, client: Any) -> None:
        return None

    async def _complete(self, client: Any, messages: Sequence[Message]) -> Completion:
        self.seen.append(list(messages))
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.replies:
            reply = self.replies.pop(0)
            text = reply(messages) if callable(reply) else reply
        else:
            text = self.fallback(messages[-1]["content"])
        return Completion(text, input_tokens=10, output_tokens=5)


def repl(code: str, after: str = "") -> str:
    """A root reply holding one ```repl block, then `after`."""
    return f"Working on it.\n```repl\n{code}\n```\n{after}"
