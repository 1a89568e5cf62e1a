"""Anthropic Messages (`/v1/messages`) through the official async SDK."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anthropic

from rlm.clients import _errors
from rlm.clients._base import Completion, LLMInterface, Message
from rlm.clients._replies import read_anthropic

_KEY_ENV = "ANTHROPIC_API_KEY"


class AnthropicInterface(LLMInterface):
    """A Claude model served over the Anthropic Messages API.

    `api_key=None` means `ANTHROPIC_API_KEY` (or `ANTHROPIC_AUTH_TOKEN`), `base_url=None`
    means `ANTHROPIC_BASE_URL` or Anthropic's own endpoint, as the SDK reads them.
    """

    provider = "anthropic"

    def __init__(
        self,
        model: str,
        api_key: str | None = None,
        base_url: str | None = None,
        **kw: Any,
    ) -> None:
        _errors.require_key(
            api_key, label="Anthropic", env_names=(_KEY_ENV, "ANTHROPIC_AUTH_TOKEN")
        )
        super().__init__(model, api_key, base_url, **kw)

    def _make_client(self) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(
            api_key=self.api_key,
            base_url=self.base_url,
            timeout=self.timeout,
            max_retries=0,  # retries live in LLMInterface, with Retry-After honoured
        )

    async def _complete(self, client: Any, messages: Sequence[Message]) -> Completion:
        # The Messages API takes the system prompt as a parameter, not as a turn.
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        turns = [
            {"role": m["role"], "content": m["content"]} for m in messages if m["role"] != "system"
        ]
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.max_output_tokens,
            "messages": turns,
        }
        if system:
            body["system"] = system
        try:
            # The client's own POST with a plain JSON body, as for OpenAI: typed params and
            # response models cost more host CPU than the rest of a sub-call.
            response = await client.post("/v1/messages", body=body, cast_to=object)
        except anthropic.APIError as exc:
            raise _errors.from_sdk_error(
                exc, anthropic, key_env=_KEY_ENV, timeout=self.timeout
            ) from exc
        except ValueError as exc:  # a body that claimed to be JSON and was not
            raise _errors.unreadable("the body is not JSON") from exc
        return read_anthropic(response)
