"""Anthropic Messages (`/v1/messages`) through the official async SDK."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anthropic

from rlm.clients import _errors
from rlm.clients._base import Completion, LLMInterface, Message

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
        extra: dict[str, Any] = {"system": system} if system else {}
        try:
            response = await client.messages.create(
                model=self.model,
                max_tokens=self.max_output_tokens,
                messages=turns,
                **extra,
            )
        except anthropic.APIError as exc:
            raise _errors.from_sdk_error(
                exc, anthropic, key_env=_KEY_ENV, timeout=self.timeout
            ) from exc
        except ValueError as exc:  # a body that claimed to be JSON and was not
            raise _errors.unreadable("the body is not JSON") from exc
        return _read_message(response)


def _read_message(response: object) -> Completion:
    # Without strict validation the SDK hands back whatever the server sent (even a plain
    # string for a non-JSON body), so every field is checked here.
    try:
        blocks = response.content  # type: ignore[attr-defined]
        if not isinstance(blocks, list):
            raise TypeError(f"content is {type(blocks).__name__}, not a list of blocks")
        text = "".join(b.text for b in blocks if getattr(b, "type", None) == "text")
    except (AttributeError, TypeError) as exc:
        raise _errors.unreadable(f"no message content in the body ({exc})") from exc
    usage = getattr(response, "usage", None)
    return Completion(
        text=text,
        input_tokens=int(getattr(usage, "input_tokens", 0) or 0),
        output_tokens=int(getattr(usage, "output_tokens", 0) or 0),
    )
