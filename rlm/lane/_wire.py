"""Each provider's wire protocol, as the lane speaks it: where to POST, what, and how to read.

Pure functions over plain values, so a test can read what would be sent without sending it.
The endpoint and key are resolved as the provider's SDK resolves them, environment
variables included, so the lane talks to the same server with the same credentials.
"""

from __future__ import annotations

import dataclasses
import json
import os
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rlm._exceptions import ProviderError
from rlm.clients import _errors
from rlm.clients._base import Completion, LLMInterface, Message
from rlm.clients._replies import read_anthropic, read_gemini, read_openai

try:  # a declared dependency: 20-40x faster than json on prompt bodies; json if absent
    import orjson

    def dumps(value: object) -> bytes:
        return orjson.dumps(value)

    loads: Callable[[bytes], Any] = orjson.loads
except ImportError:  # pragma: no cover - exercised where orjson is absent

    def dumps(value: object) -> bytes:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()

    loads = json.loads

_OPENAI_URL = "https://api.openai.com/v1"
_ANTHROPIC_URL = "https://api.anthropic.com"
_GEMINI_URL = "https://generativelanguage.googleapis.com"
_ANTHROPIC_VERSION = "2023-06-01"


@dataclass(frozen=True)
class Endpoint:
    """Where one interface's sub-calls go and how they are signed."""

    provider: str
    origin: str  # scheme://host[:port], the connection pool's key
    url: str  # the full URL each sub-call POSTs to
    headers: Mapping[str, str]
    key: str  # what the provider's rate limit is counted against
    key_env: str  # named in an authentication error
    proxy: str | None = None  # from HTTP(S)_PROXY / NO_PROXY, as the SDKs' httpx reads them


def endpoint_for(llm: LLMInterface) -> Endpoint:
    """The endpoint `llm`'s SDK would call, with the key it would send."""
    resolve = _RESOLVERS.get(llm.provider)
    if resolve is None:
        raise ValueError(f"the sub-call lane does not speak {llm.provider!r}")
    endpoint = resolve(llm)
    return dataclasses.replace(endpoint, proxy=_env_proxy(endpoint.url))


def _env_proxy(url: str) -> str | None:
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0].rsplit(":", 1)[0]
    if urllib.request.proxy_bypass(host):
        return None
    return urllib.request.getproxies().get(scheme) or None


def _origin(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"


def _openai(llm: LLMInterface) -> Endpoint:
    key = llm.api_key or os.environ.get("OPENAI_API_KEY") or ""
    base = (llm.base_url or os.environ.get("OPENAI_BASE_URL") or _OPENAI_URL).rstrip("/")
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    for header, env in (
        ("OpenAI-Organization", "OPENAI_ORG_ID"),
        ("OpenAI-Project", "OPENAI_PROJECT_ID"),
    ):
        if os.environ.get(env):
            headers[header] = os.environ[env]
    return Endpoint(
        "openai", _origin(base), base + "/chat/completions", headers, key, "OPENAI_API_KEY"
    )


def _anthropic(llm: LLMInterface) -> Endpoint:
    # The SDK takes ANTHROPIC_API_KEY first, then ANTHROPIC_AUTH_TOKEN, both as a bearer token.
    key = (
        llm.api_key
        or os.environ.get("ANTHROPIC_API_KEY")
        or os.environ.get("ANTHROPIC_AUTH_TOKEN")
        or ""
    )
    base = (llm.base_url or os.environ.get("ANTHROPIC_BASE_URL") or _ANTHROPIC_URL).rstrip("/")
    headers = {
        "Authorization": f"Bearer {key}",
        "anthropic-version": _anthropic_version(),
        "Content-Type": "application/json",
    }
    return Endpoint(
        "anthropic", _origin(base), base + "/v1/messages", headers, key, "ANTHROPIC_API_KEY"
    )


def _anthropic_version() -> str:
    try:  # the version the installed SDK speaks, so both paths ask for the same API
        from anthropic._constants import ANTHROPIC_API_VERSION
    except ImportError:  # pragma: no cover
        return _ANTHROPIC_VERSION
    return str(ANTHROPIC_API_VERSION)


def _gemini(llm: LLMInterface) -> Endpoint:
    # google-genai prefers GOOGLE_API_KEY when both are set; GeminiInterface has already
    # read GEMINI_BASE_URL into base_url, and the SDK reads GOOGLE_GEMINI_BASE_URL.
    key = llm.api_key or os.environ.get("GOOGLE_API_KEY") or os.environ.get("GEMINI_API_KEY") or ""
    base = (llm.base_url or os.environ.get("GOOGLE_GEMINI_BASE_URL") or _GEMINI_URL).rstrip("/")
    version = os.environ.get("GOOGLE_GENAI_API_VERSION") or _gemini_version()
    version = "v1beta" if version == "beta" else version
    model = (
        llm.model if llm.model.startswith(("models/", "tunedModels/")) else f"models/{llm.model}"
    )
    headers = {"x-goog-api-key": key, "Content-Type": "application/json"}
    url = f"{base}/{version}/{model}:generateContent"
    return Endpoint("gemini", _origin(base), url, headers, key, "GEMINI_API_KEY or GOOGLE_API_KEY")


def _gemini_version() -> str:
    try:  # the version the installed SDK asks for, so both paths call the same API
        from google.genai._api_client import GOOGLE_AI_API_DEFAULT_VERSION
    except ImportError:  # pragma: no cover
        return "v1beta"
    return str(GOOGLE_AI_API_DEFAULT_VERSION)


_RESOLVERS: dict[str, Callable[[LLMInterface], Endpoint]] = {
    "openai": _openai,
    "anthropic": _anthropic,
    "gemini": _gemini,
}


# -- request bodies ---------------------------------------------------------------------------


def request_body(provider: str, model: str, messages: Sequence[Message], max_tokens: int) -> bytes:
    """The JSON body of one call, as the SDK path sends it."""
    if provider == "openai":
        return dumps(
            {
                "model": model,
                "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
                "max_completion_tokens": max_tokens,
            }
        )
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    turns = [m for m in messages if m["role"] != "system"]
    if provider == "anthropic":
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": max_tokens,
            "messages": [{"role": m["role"], "content": m["content"]} for m in turns],
        }
        if system:
            body["system"] = system
        return dumps(body)
    body = {
        "contents": [
            {
                "role": "model" if m["role"] == "assistant" else "user",
                "parts": [{"text": m["content"]}],
            }
            for m in turns
        ],
        "generationConfig": {"maxOutputTokens": max_tokens},
    }
    if system:
        body["systemInstruction"] = {"parts": [{"text": system}], "role": "user"}
    return dumps(body)


# -- replies ----------------------------------------------------------------------------------

_READERS: dict[str, Callable[[object], Completion]] = {
    "openai": read_openai,
    "anthropic": read_anthropic,
    "gemini": read_gemini,
}


def read_success(provider: str, body: bytes) -> Completion:
    """The completion in a 2xx body; `BadResponseError` (retryable) if it cannot be read."""
    try:
        data = loads(body)
    except ValueError as exc:
        raise _errors.unreadable("the body is not JSON") from exc
    return _READERS[provider](data)


def read_failure(
    endpoint: Endpoint, status: int, reason: str, body: bytes, headers: Mapping[str, Any]
) -> ProviderError:
    """The error for an HTTP error status, described as the provider's SDK describes it."""
    text = body.decode("utf-8", "replace")
    if endpoint.provider == "gemini":
        detail = _gemini_detail(status, reason, text)
    else:
        detail = _stainless_detail(status, text, openai=endpoint.provider == "openai")
    return _errors.error_for_status(status, detail, key_env=endpoint.key_env, headers=headers)


def _stainless_detail(status: int, text: str, *, openai: bool) -> str:
    # The OpenAI and Anthropic SDKs: the body's `error` object, else an "Error code" line
    # (OpenAI's carries only the error's message, Anthropic's the whole body).
    stripped = text.strip()
    body: object = stripped
    message = f"Error code: {status}"
    try:
        body = json.loads(stripped)
    except ValueError:
        if not openai:
            message = stripped or message
    else:
        if not openai:
            message = f"{message} - {body}"
        else:
            error = body.get("error", body) if isinstance(body, Mapping) else None
            said = error.get("message") if isinstance(error, Mapping) else None
            if isinstance(said, str) and said:
                message = f"{message} - {said}"
    data = body.get("error", body) if isinstance(body, Mapping) else body
    return _errors.describe(data, message)


def _gemini_detail(status: int, reason: str, text: str) -> str:
    # google-genai's APIError: `message` or `error.message`, else the whole body.
    data: Any
    try:
        data = json.loads(text)
    except ValueError:
        data = {"message": text, "status": reason}
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    message = state = None
    if isinstance(data, Mapping):
        inner = data.get("error", {})
        message = data.get("message", inner.get("message") if isinstance(inner, Mapping) else None)
        state = data.get("status", inner.get("status") if isinstance(inner, Mapping) else None)
    return _errors.describe(message or data, f"{status} {state}. {data}")
