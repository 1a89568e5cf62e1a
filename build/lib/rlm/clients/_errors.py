"""Failures every provider module reports the same way: missing keys and HTTP errors.

Each provider module catches its own SDK's exceptions and hands the status, the body and
the headers to `error_for_status`, so one table decides what is retryable.
"""

from __future__ import annotations

import email.utils
import os
import time
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from rlm._exceptions import (
    AuthenticationError,
    BadResponseError,
    ConfigurationError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
)

# User-facing wording, kept together. `{detail}` is what the provider said, shortened.
MESSAGES = {
    "missing_key": "No {label} API key: set {env} or pass api_key=.",
    "rate_limited": "the provider is rate limiting requests: {detail}",
    "auth": "the provider refused the credentials; check {key_env} or api_key=: {detail}",
    "unavailable": "the provider failed to answer: {detail}",
    "timeout": "the provider did not answer in time: {detail}",
    "rejected": "the provider rejected the request: {detail}",
    "connection": "could not reach the provider: {detail}",
    "unreadable": "the provider's reply could not be read: {detail}",
}

_DETAIL_LIMIT = 300


def require_key(api_key: str | None, *, label: str, env_names: tuple[str, ...]) -> None:
    """Raise `ConfigurationError` unless a key is given or one of the SDK's variables is set."""
    if api_key or any(os.environ.get(name) for name in env_names):
        return
    env = " or ".join(env_names) + ("," if len(env_names) > 1 else "")
    raise ConfigurationError(MESSAGES["missing_key"].format(label=label, env=env))


def describe(body: object, fallback: str = "") -> str:
    """The human part of an error body: `error.message`, `message`, or the raw text, shortened."""
    detail: object = None
    if isinstance(body, Mapping):
        inner = body.get("error")
        if isinstance(inner, Mapping):
            detail = inner.get("message")
        if detail is None:
            detail = body.get("message")
    elif isinstance(body, str | bytes):
        detail = body.decode(errors="replace") if isinstance(body, bytes) else body
    text = str(detail if detail not in (None, "") else fallback or body or "no details").strip()
    return text if len(text) <= _DETAIL_LIMIT else text[: _DETAIL_LIMIT - 1] + "…"


def retry_after_seconds(headers: Mapping[str, Any] | None) -> float | None:
    """The wait a 429 asks for: `retry-after-ms`, or `Retry-After` in seconds or as a date."""
    if not headers:
        return None
    millis = _header(headers, "retry-after-ms")
    if millis is not None:
        try:
            return max(float(millis) / 1000.0, 0.0)
        except ValueError:
            pass
    value = _header(headers, "retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _header(headers: Mapping[str, Any], name: str) -> str | None:
    # SDK header maps are case-insensitive, but a plain dict may not be.
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if str(k).lower() == name), None)
    return None if value is None else str(value).strip()


def error_for_status(
    status: int,
    detail: str,
    *,
    key_env: str,
    headers: Mapping[str, Any] | None = None,
) -> ProviderError:
    """The `ProviderError` for an HTTP error status the provider answered with."""
    if status == 429:
        return RateLimitError(
            MESSAGES["rate_limited"].format(detail=detail),
            retry_after=retry_after_seconds(headers),
            status=status,
        )
    if status in (401, 403):
        return AuthenticationError(
            MESSAGES["auth"].format(detail=detail, key_env=key_env), status=status
        )
    if status == 408:
        # A 408 is the server giving up on a slow request: as transient as a timeout.
        return ProviderTimeoutError(MESSAGES["timeout"].format(detail=detail), status=status)
    if status >= 500:
        return ProviderUnavailableError(
            MESSAGES["unavailable"].format(detail=detail), status=status
        )
    return BadResponseError(MESSAGES["rejected"].format(detail=detail), status=status)


def connection_error(detail: str) -> ProviderUnavailableError:
    return ProviderUnavailableError(MESSAGES["connection"].format(detail=detail or "no details"))


def timeout_error(detail: str) -> ProviderTimeoutError:
    return ProviderTimeoutError(MESSAGES["timeout"].format(detail=detail or "no details"))


def unreadable(detail: str, *, status: int | None = 200) -> BadResponseError:
    error = BadResponseError(MESSAGES["unreadable"].format(detail=detail), status=status)
    # A success status with a body we cannot read is most often a reply cut short on the
    # way (a proxy, a dropped connection): worth another try, unlike a 4xx refusal.
    error.retryable = status is not None and 200 <= status < 300
    return error


def from_sdk_error(
    exc: Exception, sdk: ModuleType, *, key_env: str, timeout: float
) -> ProviderError:
    """Map an error raised by the `openai` or `anthropic` SDK (the two share one error tree)."""
    if isinstance(exc, sdk.APIStatusError):
        return error_for_status(
            exc.status_code,
            describe(exc.body, exc.message),
            key_env=key_env,
            headers=exc.response.headers,
        )
    if isinstance(exc, sdk.APITimeoutError):
        return timeout_error(f"no reply within {timeout:g} s")
    if isinstance(exc, sdk.APIConnectionError):
        return connection_error(describe(None, str(exc.__cause__ or exc)))
    if isinstance(exc, sdk.APIResponseValidationError):
        return unreadable(exc.message, status=exc.status_code)
    return unreadable(str(exc), status=None)
