"""The OpenAI, Anthropic and Gemini wire formats the fake LLM server speaks.

Each protocol reads a request body into one normalised conversation, and writes replies and
error bodies in the shape that provider's SDK expects.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Conversation = list[dict[str, str]]


def text_of(content: Any) -> str:
    """Text of a message's content: a string, or a list of text blocks/parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text", ""))
    if isinstance(content, list):
        return "".join(text_of(part) for part in content)
    return ""


# -- the three wire protocols -----------------------------------------------------------------


def _openai_messages(body: dict[str, Any]) -> Conversation:
    out = []
    for m in body.get("messages") or []:
        role = "system" if m.get("role") == "developer" else m.get("role", "user")
        out.append({"role": role, "content": text_of(m.get("content"))})
    return out


def _openai_reply(
    model: str, text: str, tokens_in: int, tokens_out: int, cached: int = 0, written: int = 0
) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-fake{random.randrange(10**9)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": tokens_in,
            "completion_tokens": tokens_out,
            "total_tokens": tokens_in + tokens_out,
            # OpenAI has no cache writes: what is not a hit is plain input.
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        },
    }


_OPENAI_ERRORS = {
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


def _openai_error(status: int, message: str) -> dict[str, Any]:
    kind, code = _OPENAI_ERRORS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None)
    )
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _anthropic_messages(body: dict[str, Any]) -> Conversation:
    out = []
    system = text_of(body.get("system"))
    if system:
        out.append({"role": "system", "content": system})
    for m in body.get("messages") or []:
        out.append({"role": m.get("role", "user"), "content": text_of(m.get("content"))})
    return out


def _anthropic_reply(
    model: str, text: str, tokens_in: int, tokens_out: int, cached: int = 0, written: int = 0
) -> dict[str, Any]:
    return {
        "id": f"msg_fake{random.randrange(10**9)}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        # Anthropic's input_tokens is what is neither read from nor written to the cache.
        "usage": {
            "input_tokens": tokens_in - cached - written,
            "cache_read_input_tokens": cached,
            "cache_creation_input_tokens": written,
            "output_tokens": tokens_out,
        },
    }


_ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def _anthropic_error(status: int, message: str) -> dict[str, Any]:
    kind = _ANTHROPIC_ERRORS.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def _gemini_messages(body: dict[str, Any]) -> Conversation:
    out = []
    system = body.get("systemInstruction") or body.get("system_instruction")
    if system:
        out.append({"role": "system", "content": text_of(system.get("parts"))})
    for c in body.get("contents") or []:
        role = "assistant" if c.get("role") == "model" else "user"
        out.append({"role": role, "content": text_of(c.get("parts"))})
    return out


def _gemini_reply(
    model: str, text: str, tokens_in: int, tokens_out: int, cached: int = 0, written: int = 0
) -> dict[str, Any]:
    return {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": text}]},
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": tokens_in,  # cache hits included, as Gemini counts them
            "candidatesTokenCount": tokens_out,
            "totalTokenCount": tokens_in + tokens_out,
            **({"cachedContentTokenCount": cached} if cached else {}),
        },
        "modelVersion": model,
        "responseId": f"fake{random.randrange(10**9)}",
    }


_GEMINI_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def _gemini_error(status: int, message: str) -> dict[str, Any]:
    name = _GEMINI_STATUSES.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")
    return {"error": {"code": status, "message": message, "status": name}}


def _bearer(headers: dict[str, str]) -> str | None:
    value = headers.get("authorization", "")
    return value[7:] if value.lower().startswith("bearer ") else None


@dataclass(frozen=True)
class Protocol:
    name: str
    messages: Callable[[dict[str, Any]], Conversation]
    reply: Callable[..., dict[str, Any]]  # (model, text, in, out, cached=0, written=0)
    error: Callable[[int, str], dict[str, Any]]
    key: Callable[[dict[str, str]], str | None]


PROTOCOLS = {
    "openai": Protocol("openai", _openai_messages, _openai_reply, _openai_error, _bearer),
    "anthropic": Protocol(
        "anthropic",
        _anthropic_messages,
        _anthropic_reply,
        _anthropic_error,
        lambda h: h.get("x-api-key") or _bearer(h),
    ),
    "gemini": Protocol(
        "gemini", _gemini_messages, _gemini_reply, _gemini_error, lambda h: h.get("x-goog-api-key")
    ),
}

ERROR_TEXT = {
    401: "Invalid API key provided.",
    429: "Rate limit reached; please try again later.",
}
