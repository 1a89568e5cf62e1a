"""Provider interfaces: one abstract base and one module per provider SDK.

The provider classes are imported on first access, so `import rlm` does not pay for SDKs
a program never uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rlm.clients._base import Completion, LLMInterface, Message, Usage
from rlm.clients._resolve import PROVIDERS, interface_from_spec, provider_class

if TYPE_CHECKING:
    from rlm.clients.anthropic import AnthropicInterface
    from rlm.clients.gemini import GeminiInterface
    from rlm.clients.openai import OpenAIInterface

_LAZY = {cls_name: provider for provider, (_, cls_name) in PROVIDERS.items()}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return provider_class(_LAZY[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
