"""The one Slack Web API client and the small helpers around it.

Every Web API call goes through one `AsyncWebClient` (base URL from settings, 429s retried
after `Retry-After`). `SlackPoster` posts replies and explains Slack's refusals to the user
who asked, ephemerally; `is_slack_host` decides where the bot token may be sent.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.slack import messages
from bot.telemetry.metrics import SLACK_CALLS, SLACK_RATE_LIMITED

logger = logging.getLogger("bot.slack")

RATE_LIMIT_RETRIES = 5
_DEFAULT_PORTS = {"http": 80, "https": 443}


def make_web_client(
    token: str, api_url: str, session: aiohttp.ClientSession | None = None
) -> AsyncWebClient:
    return AsyncWebClient(
        token=token,
        base_url=api_url,
        session=session,
        retry_handlers=[
            CountingHandler(),
            AsyncConnectionErrorRetryHandler(),
            AsyncRateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES),
        ],
    )


class CountingHandler(AsyncRetryHandler):
    """Retries nothing: first in the client's list, it sees every answer Slack gives (each
    attempt) and counts it by method, and the 429s apart, for /metrics."""

    async def can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if response is not None:
            method = urlsplit(request.url).path.rsplit("/", 1)[-1] or "unknown"
            SLACK_CALLS.labels(method).inc()
            if response.status_code == 429:
                SLACK_RATE_LIMITED.labels(method).inc()
        return False


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS.get(scheme)


def is_slack_host(url: str, api_url: str) -> bool:
    """True if the bot token may go to `url`: Slack's own hosts over HTTPS, or SLACK_API_URL's.

    The configured API's origin is compared with its port, so a loopback Slack stand-in on
    one port does not vouch for another service on the same host.
    """
    scheme, host, port = _origin(url)
    if scheme == "https" and (host == "slack.com" or host.endswith(".slack.com")):
        return True
    return (scheme, host, port) == _origin(api_url)


def error_code(exc: SlackApiError) -> str:
    return str(exc.response.get("error") or "unknown_error")


def explain(method: str, exc: SlackApiError) -> str:
    """What to tell a user when Slack refused `method`."""
    code = error_code(exc)
    if code in ("not_in_channel", "channel_not_found"):
        return messages.NOT_IN_CHANNEL
    if code == "missing_scope":
        return messages.missing_scope(str(exc.response.get("needed") or "unknown"))
    if code == "is_archived":
        return messages.ARCHIVED
    return messages.slack_refused(method, code)


@dataclass(frozen=True)
class BotIdentity:
    user_id: str
    bot_id: str | None
    url: str | None = None  # the workspace's URL (auth.test), for building permalinks


class SlackPoster:
    """Posting replies, and telling one user (ephemerally) why something could not be done."""

    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client
        self._identity: BotIdentity | None = None

    async def identity(self) -> BotIdentity:
        if self._identity is None:
            reply = await self.client.auth_test()
            self._identity = BotIdentity(
                user_id=reply["user_id"], bot_id=reply.get("bot_id"), url=reply.get("url")
            )
        return self._identity

    async def post(self, channel: str, text: str, *, thread_ts: str | None = None) -> str:
        """Post a message (threaded when `thread_ts` is given) and return its ts."""
        reply = await self.client.chat_postMessage(
            channel=channel, text=text, thread_ts=thread_ts, unfurl_links=False, unfurl_media=False
        )
        return str(reply["ts"])

    async def try_post(self, channel: str, text: str, *, thread_ts: str | None = None) -> bool:
        """Post, logging instead of raising: progress and notices must not end a run."""
        try:
            await self.post(channel, text, thread_ts=thread_ts)
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            logger.warning("could not post to %s: %s", channel, _short(exc))
            return False
        return True

    async def tell_user(
        self, channel: str, user: str | None, text: str, *, response_url: str | None = None
    ) -> bool:
        """An ephemeral message to `user`; through the slash command's response URL when
        chat.postEphemeral cannot reach them (the bot is not in the channel)."""
        if user:
            try:
                await self.client.chat_postEphemeral(channel=channel, user=user, text=text)
                return True
            except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
                logger.info("ephemeral to %s in %s failed: %s", user, channel, _short(exc))
        if response_url:
            try:
                webhook = AsyncWebhookClient(response_url, session=self.client.session)
                response = await webhook.send(text=text, response_type="ephemeral")
                return response.status_code == 200
            except (aiohttp.ClientError, TimeoutError) as exc:
                logger.warning("response_url post failed: %s", _short(exc))
        return False


def _short(exc: BaseException) -> str:
    if isinstance(exc, SlackApiError):
        return error_code(exc)
    return type(exc).__name__


def serving_team(context: Mapping[str, Any] | None) -> str | None:
    """The workspace whose installation Bolt authorized the request with (its token is the
    one the request is served with), when Bolt found one: for an event,
    `authorizations[0].team_id`, which in a Slack Connect channel differs from the sender's
    `team_id`. None for an org-wide install's events, which name no single workspace."""
    team = context.get("team_id") if context is not None else None
    return team if isinstance(team, str) and team else None


def event_team(
    body: dict[str, Any], event: dict[str, Any], context: Mapping[str, Any] | None = None
) -> str:
    """The workspace an event is read with, stored, budgeted and configured under: the one
    that authorized it (`serving_team`), else the event's own (an org-wide install's events
    carry the workspace they come from)."""
    return serving_team(context) or str(
        body.get("team_id") or event.get("team") or event.get("user_team") or "unknown"
    )
