"""What a run is asked and what it thinks with: `Question` as the listeners hand it over,
`EngineConfig` (models, prompt mode, sandbox and limits), and the process's `StopFlag`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from rlm import LLMInterface, Price, SandboxLimits

__all__ = ["EngineConfig", "Question", "StopFlag"]


@dataclass(frozen=True)
class Question:
    """A question as the listeners hand it over."""

    team_id: str
    channel_id: str
    user_id: str
    text: str
    trigger: Literal["command", "mention", "assistant", "dm"]
    scope: Literal["channel", "thread"]
    # Where to answer; None for a slash command, whose question is posted first.
    thread_ts: str | None = None
    # Messages to leave out of the context (the mention itself).
    exclude_ts: tuple[str, ...] = ()
    response_url: str | None = None
    retry_of: int | None = None  # the run a Retry button repeats
    # The channel to read when it is not the one answered in (the assistant pane's viewed
    # channel, checked by the caller); None: `channel_id`.
    context_channel_id: str | None = None
    # How progress shows: one status message in the thread, or the pane's status line.
    progress: Literal["replies", "pane"] = "replies"


@dataclass(frozen=True)
class EngineConfig:
    root_llm: LLMInterface
    sub_llm: LLMInterface
    root_model: str
    sub_model: str
    prompt_mode: Literal["standard", "conservative", "no_subcalls"] = "standard"
    sandbox_limits: SandboxLimits = field(default_factory=SandboxLimits)
    provider_timeout: float = 120.0
    max_map_chunks: int = 10_000  # chunks in one parallel_query
    max_prompt_bytes: int = 64 * 1024 * 1024  # one llm_query prompt, or one map's prompts
    provider_max_concurrency: int = 256  # ceiling of the adaptive limit per provider key
    prices: Mapping[str, Price] | None = None  # None: the engine's shipped table


@dataclass
class StopFlag:
    """Set at shutdown; one for every runner of the process."""

    stopping: bool = False
