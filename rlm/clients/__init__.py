"""Provider interfaces: one abstract base and one module per provider SDK."""

from __future__ import annotations

from rlm.clients._base import Completion, LLMInterface, Message, Usage
from rlm.clients._resolve import interface_from_spec
from rlm.clients.anthropic import AnthropicInterface
from rlm.clients.gemini import GeminiInterface
from rlm.clients.openai import OpenAIInterface

__all__ = [
    "AnthropicInterface",
    "Completion",
    "GeminiInterface",
    "LLMInterface",
    "Message",
    "OpenAIInterface",
    "Usage",
    "interface_from_spec",
]
