"""Gemini `generateContent` through the `google-genai` SDK's async client (`client.aio`)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx2
import pydantic
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from rlm._exceptions import ProviderError
from rlm.clients import _errors
from rlm.clients._base import Completion, LLMInterface, Message

_KEY_ENVS = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
# The SDK itself only reads GOOGLE_GEMINI_BASE_URL; the project documents GEMINI_BASE_URL.
_BASE_URL_ENV = "GEMINI_BASE_URL"


@dataclass(frozen=True)
class _Clients:
    sdk: genai.Client
    http: httpx2.AsyncClient


class GeminiInterface(LLMInterface):
    """A Gemini model served over the Gemini API.

    `api_key=None` means `GEMINI_API_KEY` or `GOOGLE_API_KEY`, as the SDK reads them;
    `base_url=None` means `GEMINI_BASE_URL`, then the SDK's own `GOOGLE_GEMINI_BASE_URL`
    or Google's endpoint.
    """

    provider = "gemini"

    def __init__(
        self,
        model: str,
        api_key: str | None = None,
        base_url: str | None = None,
        **kw: Any,
    ) -> None:
        _errors.require_key(api_key, label="Gemini", env_names=_KEY_ENVS)
        if base_url is None:
            base_url = os.environ.get(_BASE_URL_ENV) or None
        super().__init__(model, api_key, base_url, **kw)

    def _make_client(self) -> _Clients:
        # Our own httpx2 client, like the other two SDKs use: left to itself the SDK picks
        # aiohttp when it is installed, which warns on every session it opens and quietly
        # retries connection errors after sleeping up to ten seconds.
        http = httpx2.AsyncClient(
            timeout=self.timeout,
            # The pool size the OpenAI and Anthropic SDKs use: sub-calls come in bursts.
            limits=httpx2.Limits(max_connections=1000, max_keepalive_connections=100),
        )
        options = types.HttpOptions(
            base_url=self.base_url,
            timeout=max(1, round(self.timeout * 1000)),  # the SDK counts milliseconds
            retry_options=types.HttpRetryOptions(attempts=1),  # retries live in LLMInterface
            httpx_async_client=http,
        )
        return _Clients(genai.Client(api_key=self.api_key, http_options=options), http)

    @staticmethod
    async def _close_client(client: Any) -> None:
        try:
            await client.sdk.aio.aclose()
        finally:
            await client.http.aclose()  # the SDK leaves a client it was given open
            client.sdk.close()  # and it opens a sync connection pool of its own

    async def _complete(self, client: Any, messages: Sequence[Message]) -> Completion:
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        contents = [
            types.Content(
                role="model" if m["role"] == "assistant" else "user",
                parts=[types.Part(text=m["content"])],
            )
            for m in messages
            if m["role"] != "system"
        ]
        config = types.GenerateContentConfig(
            system_instruction=system or None,
            max_output_tokens=self.max_output_tokens,
        )
        try:
            response = await client.sdk.aio.models.generate_content(
                model=self.model, contents=contents, config=config
            )
        except Exception as exc:
            mapped = _map_error(exc, self.timeout)
            if mapped is None:
                raise
            raise mapped from exc
        return _read_response(response)


def _map_error(exc: Exception, timeout: float) -> ProviderError | None:
    """The `rlm` error for an SDK or transport failure; None for a bug to let through."""
    if isinstance(exc, genai_errors.APIError):
        response = getattr(exc, "response", None)
        return _errors.error_for_status(
            int(exc.code or 0),
            _errors.describe(exc.message or exc.details, str(exc)),
            key_env=" or ".join(_KEY_ENVS),
            headers=getattr(response, "headers", None),
        )
    if isinstance(exc, TimeoutError | httpx2.TimeoutException):
        return _errors.timeout_error(f"no reply within {timeout:g} s")
    if isinstance(exc, httpx2.TransportError | ConnectionError):
        return _errors.connection_error(_errors.describe(None, str(exc) or type(exc).__name__))
    if isinstance(exc, json.JSONDecodeError):
        return _errors.unreadable("the body is not JSON")
    if isinstance(exc, pydantic.ValidationError | genai_errors.UnknownApiResponseError):
        return _errors.unreadable(_errors.describe(None, str(exc)))
    return None


def _read_response(response: object) -> Completion:
    try:
        candidates = response.candidates  # type: ignore[attr-defined]
        if not candidates:
            raise ValueError("no candidates (the prompt may have been blocked)")
        parts = candidates[0].content.parts or []
        # Thought summaries are the model's notes to itself, not its answer.
        text = "".join(p.text for p in parts if p.text and not p.thought)
    except (AttributeError, TypeError, ValueError) as exc:
        raise _errors.unreadable(str(exc)) from exc
    usage = getattr(response, "usage_metadata", None)
    return Completion(
        text=text,
        input_tokens=int(getattr(usage, "prompt_token_count", 0) or 0),
        # Thinking tokens are billed as output, so they count here too.
        output_tokens=int(getattr(usage, "candidates_token_count", 0) or 0)
        + int(getattr(usage, "thoughts_token_count", 0) or 0),
        # prompt_token_count includes the cache hits, reported apart here.
        cached_input_tokens=int(getattr(usage, "cached_content_token_count", 0) or 0),
    )
