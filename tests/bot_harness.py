"""Driving the app the way Slack does: signed requests in, the loopback servers behind it.

`SlackEvents` signs slash commands and Events API payloads as Slack does and posts them to
/slack/events; `BotHarness` runs the real app (HTTP server on port 0, SQLite file) against
the loopback Slack and LLM servers, and can stop and start it again.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from slack_server import BOT_TOKEN, BOT_USER, SIGNING_SECRET

from bot.app import HttpServer, Services, create_app, readiness_of, serve_http
from bot.settings import Settings

# A root reply that makes one sub-call per non-empty line of the context: a long map.
MAP_EVERY_LINE = """Mapping over every line.
```repl
lines = [l for doc in context for l in doc.splitlines() if l.strip()]
answers = parallel_query("Summarize: {chunk}", lines)
final_answer = f"{len(answers)} parts read"
```
FINAL_VAR(final_answer)"""


@dataclass
class Reply:
    status: int
    body: str
    seconds: float

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class SlackEvents:
    """Sends what Slack sends to /slack/events: signed slash commands and event callbacks."""

    def __init__(
        self, url: str, *, signing_secret: str = SIGNING_SECRET, response_base: str = ""
    ) -> None:
        self.url = url
        self.signing_secret = signing_secret
        self.response_base = response_base
        self._counter = 0
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def sign(self, body: str, timestamp: int | None = None) -> dict[str, str]:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        digest = hmac.new(
            self.signing_secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256
        ).hexdigest()
        return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}

    async def send(
        self, body: str, content_type: str, headers: dict[str, str] | None = None
    ) -> Reply:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        sent = {"Content-Type": content_type, **self.sign(body), **(headers or {})}
        started = time.perf_counter()
        async with self._session.post(self.url, data=body.encode(), headers=sent) as response:
            text = await response.text()
        return Reply(response.status, text, time.perf_counter() - started)

    async def command(
        self,
        text: str,
        *,
        team_id: str = "T1",
        channel_id: str = "C1",
        user_id: str = "U1",
        command: str = "/rlm",
        headers: dict[str, str] | None = None,
    ) -> Reply:
        self._counter += 1
        form = {
            "token": "legacy",
            "team_id": team_id,
            "team_domain": "test",
            "channel_id": channel_id,
            "channel_name": "general",
            "user_id": user_id,
            "user_name": user_id.lower(),
            "command": command,
            "text": text,
            "api_app_id": "A1",
            "response_url": f"{self.response_base}/response/{self._counter}",
            "trigger_id": f"trigger-{self._counter}",
        }
        body = urllib.parse.urlencode(form)
        return await self.send(body, "application/x-www-form-urlencoded", headers)

    async def event(
        self,
        event: dict[str, Any],
        *,
        team_id: str = "T1",
        event_id: str | None = None,
        retry_num: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        self._counter += 1
        payload = {
            "token": "legacy",
            "team_id": team_id,
            "api_app_id": "A1",
            "event": event,
            "type": "event_callback",
            "event_id": event_id or f"Ev{self._counter:06d}",
            "event_time": int(time.time()),
            "authorizations": [{"team_id": team_id, "user_id": BOT_USER, "is_bot": True}],
        }
        extra = dict(headers or {})
        if retry_num is not None:
            extra |= {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": "timeout"}
        return await self.send(json.dumps(payload), "application/json", extra)

    async def action(self, payload: dict[str, Any]) -> Reply:
        """Post an interaction (block_actions) as Slack does: a form with `payload=<json>`."""
        body = urllib.parse.urlencode({"payload": json.dumps(payload)})
        return await self.send(body, "application/x-www-form-urlencoded")


def block_action(
    action_id: str,
    run_id: int | str,
    *,
    user: str = "U1",
    channel: str | None = "C1",
    team_id: str = "T1",
    message_ts: str = "",
) -> dict[str, Any]:
    """A block_actions payload: `user` clicked the button `action_id` of run `run_id`."""
    payload: dict[str, Any] = {
        "type": "block_actions",
        "team": {"id": team_id, "domain": "test"},
        "user": {"id": user, "team_id": team_id},
        "api_app_id": "A1",
        "token": "legacy",
        "trigger_id": f"trigger-{action_id}-{run_id}",
        "actions": [
            {
                "type": "button",
                "action_id": action_id,
                "block_id": f"rlm_run_{run_id}",
                "value": str(run_id),
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }
    if channel is not None:
        payload["channel"] = {"id": channel, "name": "general"}
        payload["container"] = {"type": "message", "message_ts": message_ts, "channel_id": channel}
    else:
        payload["container"] = {"type": "view", "view_id": "V1"}
        payload["view"] = {"id": "V1", "private_metadata": str(run_id)}
    return payload


def mention(channel: str, text: str, ts: str, *, user: str = "U1", **extra: Any) -> dict[str, Any]:
    return {
        "type": "app_mention",
        "user": user,
        "text": text,
        "ts": ts,
        "channel": channel,
        "event_ts": ts,
        **extra,
    }


def file_shared(channel: str, file_id: str, *, user: str = "U1") -> dict[str, Any]:
    return {
        "type": "file_shared",
        "channel_id": channel,
        "file_id": file_id,
        "user_id": user,
        "file": {"id": file_id},
        "event_ts": f"{time.time():.6f}",
    }


def harness_settings(
    *, slack_api_url: str, openai_base_url: str, database_url: str, **overrides: Any
) -> Settings:
    """Settings for a test app: every value given here, so the developer's env cannot leak in."""
    values: dict[str, Any] = {
        "slack_bot_token": BOT_TOKEN,
        "slack_signing_secret": SIGNING_SECRET,
        "slack_app_token": None,
        "slack_api_url": slack_api_url,
        "database_url": database_url,
        "rlm_root_model": "openai:root-model",
        "rlm_sub_model": "openai:sub-model",
        "openai_api_key": "test-key",
        "openai_base_url": openai_base_url,
        "rlm_progress_interval": 0.0,
        "rlm_status_edit_interval": 0.0,
        "rlm_history_days": 0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


class BotHarness:
    """The app on 127.0.0.1:0, its services, and a signed-request client pointed at it."""

    def __init__(self, settings: Settings, *, response_base: str) -> None:
        self.settings = settings
        self.response_base = response_base
        self.services: Services | None = None
        self.http: HttpServer | None = None
        self.events: SlackEvents | None = None

    @property
    def store(self) -> Any:
        assert self.services is not None
        return self.services.store

    async def start(self) -> BotHarness:
        app, self.services = await create_app(self.settings)
        self.http = await serve_http(
            app,
            host="127.0.0.1",
            port=0,
            max_request_bytes=self.settings.rlm_max_request_bytes,
            readiness=readiness_of(self.services),
        )
        self.events = SlackEvents(self.http.url, response_base=self.response_base)
        return self

    async def settle(self, seconds: float = 30.0) -> None:
        """Wait until the app has finished all the work it started."""
        assert self.services is not None
        await asyncio.wait_for(self.services.drain(), seconds)

    async def close(self) -> None:
        if self.events is not None:
            await self.events.close()
        if self.http is not None:
            await self.http.close()
        if self.services is not None:
            await self.services.close()
        self.events = self.http = self.services = None


async def wait_until(predicate: Callable[[], bool], seconds: float = 10.0) -> None:
    """Poll `predicate` while letting the loop run; AssertionError after `seconds`."""
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
