"""Interfaces named by `provider:model` strings, the form used in settings and on the CLI."""

from __future__ import annotations

import importlib
from typing import Any

from rlm._exceptions import ConfigurationError
from rlm.clients._base import LLMInterface

# provider -> (module, class); imported on first use, since each SDK takes a second or more
# to import and most programs use one provider.
PROVIDERS: dict[str, tuple[str, str]] = {
    "openai": ("rlm.clients.openai", "OpenAIInterface"),
    "anthropic": ("rlm.clients.anthropic", "AnthropicInterface"),
    "gemini": ("rlm.clients.gemini", "GeminiInterface"),
}


def provider_class(provider: str) -> type[LLMInterface] | None:
    """The interface class for `provider`, or None if there is no such provider."""
    where = PROVIDERS.get(provider)
    if where is None:
        return None
    cls: type[LLMInterface] = getattr(importlib.import_module(where[0]), where[1])
    return cls


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
    cls = provider_class(provider.strip().lower())
    if not sep or cls is None or not model.strip():
        raise ConfigurationError(_BAD_SPEC.format(spec=spec, known=", ".join(PROVIDERS)))
    return cls(model.strip(), api_key=api_key, base_url=base_url, **kw)
