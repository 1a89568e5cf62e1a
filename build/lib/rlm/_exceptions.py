"""Errors the engine raises.

RLMError
├── ConfigurationError          bad model spec, missing API key, bad argument
├── ProviderError               a model call failed (after retries, when retryable)
│   ├── RateLimitError          429; carries retry_after
│   ├── ProviderUnavailableError 5xx, connection failures
│   ├── ProviderTimeoutError    the call timed out
│   ├── AuthenticationError     401/403: the key is wrong or missing
│   └── BadResponseError        4xx other than the above, or a body we cannot read
└── REPLError                   the sandboxed worker could not be started or talked to
"""

from __future__ import annotations


class RLMError(Exception):
    """Base of every error the engine raises."""


class ConfigurationError(RLMError):
    """The engine was set up wrongly: an unknown provider, a missing key, a bad argument."""


class ProviderError(RLMError):
    """A call to a model provider failed."""

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        model: str = "",
        status: int | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.model = model
        self.status = status
        self.attempts = attempts

    def __str__(self) -> str:
        where = f"{self.provider}:{self.model}" if self.provider else self.model
        status = f" (HTTP {self.status})" if self.status else ""
        tries = f" after {self.attempts} attempts" if self.attempts > 1 else ""
        return f"{where}{status}{tries}: {self.message}" if where else self.message


class RateLimitError(ProviderError):
    """The provider answered 429; `retry_after` is the wait it asked for, in seconds."""

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after


class ProviderUnavailableError(ProviderError):
    """The provider answered 5xx or could not be reached."""

    retryable = True


class ProviderTimeoutError(ProviderError):
    """The call took longer than the timeout."""

    retryable = True


class AuthenticationError(ProviderError):
    """The provider refused the credentials (401/403)."""


class BadResponseError(ProviderError):
    """The provider refused the request (4xx) or sent a body that could not be read."""


class REPLError(RLMError):
    """The sandboxed REPL worker could not be started or stopped answering."""
