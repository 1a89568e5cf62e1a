"""Reading a provider's reply body (parsed JSON) into a `Completion`, for both call paths.

The body is whatever the server sent, so every field is checked; what cannot be read is a
`BadResponseError` (see `_errors.unreadable`).
"""

from __future__ import annotations

from typing import Any

from rlm.clients import _errors
from rlm.clients._base import Completion


def _object(body: object) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise TypeError(f"the body is a JSON {type(body).__name__}, not an object")
    return body


def read_openai(body: object) -> Completion:
    """A Chat Completions reply."""
    try:
        message = _object(body)["choices"][0]["message"]
        text = message.get("content")
        if text is None:
            text = message.get("refusal") or ""
        if not isinstance(text, str):
            raise TypeError(f"message content is {type(text).__name__}, not text")
        usage = _object(body).get("usage") or {}
        input_tokens = int(usage.get("prompt_tokens") or 0)
        output_tokens = int(usage.get("completion_tokens") or 0)
        # prompt_tokens includes the cache hits, reported apart in prompt_tokens_details.
        details = usage.get("prompt_tokens_details") or {}
        cached = int(details.get("cached_tokens") or 0)
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
        raise _errors.unreadable(f"no chat completion choice in the body ({exc})") from exc
    return Completion(text, input_tokens, output_tokens, cached_input_tokens=cached)


def read_anthropic(body: object) -> Completion:
    """A Messages reply: the text blocks, joined."""
    try:
        blocks = _object(body).get("content")
        if not isinstance(blocks, list):
            raise TypeError(f"content is {type(blocks).__name__}, not a list of blocks")
        text = "".join(
            str(b.get("text") or "")
            for b in blocks
            if isinstance(b, dict) and b.get("type") == "text"
        )
        usage = _object(body).get("usage") or {}
        # Anthropic's input_tokens leaves out cache reads and writes: the total adds them.
        read = int(usage.get("cache_read_input_tokens") or 0)
        written = int(usage.get("cache_creation_input_tokens") or 0)
        input_tokens = int(usage.get("input_tokens") or 0) + read + written
        output_tokens = int(usage.get("output_tokens") or 0)
    except (AttributeError, TypeError, ValueError) as exc:
        raise _errors.unreadable(f"no message content in the body ({exc})") from exc
    return Completion(
        text, input_tokens, output_tokens, cached_input_tokens=read, cache_write_tokens=written
    )


def read_gemini(body: object) -> Completion:
    """A generateContent reply: the first candidate's text parts, thoughts left out."""
    if isinstance(body, list) and len(body) <= 1:  # google-genai reads [x] as x, [] as {}
        body = body[0] if body else {}
    try:
        data = _object(body)
        candidates = data.get("candidates")
        if not candidates:
            raise ValueError("no candidates (the prompt may have been blocked)")
        parts = (candidates[0].get("content") or {}).get("parts") or []
        # Thought summaries are the model's notes to itself, not its answer.
        text = "".join(
            str(p["text"])
            for p in parts
            if isinstance(p, dict) and p.get("text") and not p.get("thought")
        )
        usage = data.get("usageMetadata") or {}
        input_tokens = int(usage.get("promptTokenCount") or 0)  # cache hits included
        cached = int(usage.get("cachedContentTokenCount") or 0)
        # Thinking tokens are billed as output, so they count here too.
        output_tokens = int(usage.get("candidatesTokenCount") or 0) + int(
            usage.get("thoughtsTokenCount") or 0
        )
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
        raise _errors.unreadable(str(exc)) from exc
    return Completion(text, input_tokens, output_tokens, cached_input_tokens=cached)
