"""Interfaces named by `provider:model` strings, the form used in settings and on the CLI."""

from __future__ import annotations

from typing import Any

from rlm._exceptions import ConfigurationError
from rlm.clients._base import LLMInterface
from rlm.clients.anthropic import AnthropicInterface
from rlm.clients.gemini import GeminiInterface
from rlm.clients.openai import OpenAIInterface

PROVIDERS: dict[str, type[LLMInterface]] = {
    "openai": OpenAIInterface,
    "anthropic": AnthropicInterface,
    "gemini": GeminiInterface,
}

_BAD_SPEC = (
    "Model {spec!r} is not of the form provider:model with a provider among {known} "
    "(for example openai:gpt-4o-mini)."
)


def interface_from_spec(
    spec: str, *, api_key: str | None = None, base_url: str | None = None, **kw: Any
) -> LLMInterface:
    """The interface for `spec`, e.g. `"openai:gpt-4o"`; other arguments go to its constructor."""
    if not isinstance(spec, str):
        raise ConfigurationError(_BAD_SPEC.format(spec=spec, known=", ".join(PROVIDERS)))
    provider, sep, model = spec.strip().partition(":")
    cls = PROVIDERS.get(provider.strip().lower())
    if not sep or cls is None or not model.strip():
        raise ConfigurationError(_BAD_SPEC.format(spec=spec, known=", ".join(PROVIDERS)))
    return cls(model.strip(), api_key=api_key, base_url=base_url, **kw)
