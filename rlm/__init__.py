"""rlm: Recursive Language Models — answer questions over contexts larger than any window.

The whole public surface is re-exported here.
"""

from typing import TYPE_CHECKING, Any

from rlm._adaptive import ProviderLimit, provider_limits
from rlm._core import RLM, write_trajectory_jsonl
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
from rlm._exceptions import (
    AuthenticationError,
    BadResponseError,
    ConfigurationError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
    REPLError,
    RLMError,
)
from rlm._limiter import KeyedLimiter, Limiter, SlotLimiter
from rlm._pricing import DEFAULT_PRICES, Price, load_prices, load_prices_file, price_for
from rlm.clients import Completion, LLMInterface, Message, Usage, interface_from_spec
from rlm.repl import SandboxLimits

if TYPE_CHECKING:
    from rlm.clients.anthropic import AnthropicInterface
    from rlm.clients.gemini import GeminiInterface
    from rlm.clients.openai import OpenAIInterface


def __getattr__(name: str) -> Any:
    # The provider interfaces load their SDK on first use (see rlm.clients).
    if name in ("AnthropicInterface", "GeminiInterface", "OpenAIInterface"):
        import rlm.clients

        return getattr(rlm.clients, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AnthropicInterface",
    "AuthenticationError",
    "BadResponseError",
    "CodeExecuted",
    "Completion",
    "ConfigurationError",
    "DEFAULT_PRICES",
    "Event",
    "EventCallback",
    "GeminiInterface",
    "IterationFinished",
    "IterationStarted",
    "KeyedLimiter",
    "LLMInterface",
    "Limiter",
    "Message",
    "OpenAIInterface",
    "Price",
    "ProviderError",
    "ProviderLimit",
    "ProviderTimeoutError",
    "ProviderUnavailableError",
    "REPLError",
    "RLM",
    "RLMError",
    "RateLimitError",
    "RootReplied",
    "RunFinished",
    "SandboxLimits",
    "SlotLimiter",
    "SubcallProgress",
    "Usage",
    "interface_from_spec",
    "load_prices",
    "load_prices_file",
    "price_for",
    "provider_limits",
    "write_trajectory_jsonl",
]
