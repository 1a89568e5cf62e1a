"""rlm: Recursive Language Models — answer questions over contexts larger than any window.

The whole public surface is re-exported here.
"""

from rlm._core import RLM, write_trajectory_jsonl
from rlm._events import (
    CodeExecuted,
    Event,
    EventCallback,
    IterationFinished,
    IterationStarted,
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
from rlm._limiter import KeyedLimiter, Limiter
from rlm.clients import (
    AnthropicInterface,
    Completion,
    GeminiInterface,
    LLMInterface,
    Message,
    OpenAIInterface,
    Usage,
    interface_from_spec,
)

__all__ = [
    "RLM",
    "AnthropicInterface",
    "AuthenticationError",
    "BadResponseError",
    "CodeExecuted",
    "Completion",
    "ConfigurationError",
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
    "ProviderError",
    "ProviderTimeoutError",
    "ProviderUnavailableError",
    "REPLError",
    "RLMError",
    "RateLimitError",
    "RunFinished",
    "SubcallProgress",
    "Usage",
    "interface_from_spec",
    "write_trajectory_jsonl",
]
