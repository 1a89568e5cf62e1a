"""OpenAI Chat Completions (`/v1/chat/completions`) through the official async SDK.

Any OpenAI-compatible server (vLLM, Ollama, llama.cpp, gateways) works through `base_url`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import openai

from rlm.clients import _errors
from rlm.clients._base import Completion, LLMInterface, Message
from rlm.clients._replies import read_openai

_KEY_ENV = "OPENAI_API_KEY"


class OpenAIInterface(LLMInterface):
    """A chat model served over the OpenAI Chat Completions API.

    `api_key=None` means `OPENAI_API_KEY`, `base_url=None` means `OPENAI_BASE_URL` or
    OpenAI's own endpoint, as the SDK reads them.
    """

    provider = "openai"

    def __init__(
        self,
        model: str,
        api_key: str | None = None,
        base_url: str | None = None,
        **kw: Any,
    ) -> None:
        _errors.require_key(api_key, label="OpenAI", env_names=(_KEY_ENV,))
        super().__init__(model, api_key, base_url, **kw)

    def _make_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            api_key=self.api_key,
            base_url=self.base_url,
            timeout=self.timeout,
            max_retries=0,  # retries live in LLMInterface, with Retry-After honoured
        )

    async def _complete(self, client: Any, messages: Sequence[Message]) -> Completion:
        body = {
            "model": self.model,
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
            # Newer OpenAI models refuse `max_tokens`; compatible servers ignore what they
            # do not know, so this name is the one that works everywhere.
            "max_completion_tokens": self.max_output_tokens,
        }
        try:
            # The client's own POST (its auth, base URL, timeouts and error types) with the
            # body as plain JSON: `chat.completions.create` spends about a third of a
            # sub-call's host CPU re-walking typed params and building response models,
            # which a parallel_query of thousands of chunks pays for in wall time.
            response = await client.post("/chat/completions", body=body, cast_to=object)
        except openai.APIError as exc:
            raise _errors.from_sdk_error(
                exc, openai, key_env=_KEY_ENV, timeout=self.timeout
            ) from exc
        except ValueError as exc:  # a body that claimed to be JSON and was not
            raise _errors.unreadable("the body is not JSON") from exc
        return read_openai(response)
