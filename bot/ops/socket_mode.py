"""Socket Mode with the same shape check as HTTP: a payload `bot.slack.payloads.problem`
refuses is acknowledged (so Slack does not send it again), counted and summed up in the log
like HTTP's refusals, and never reaches Bolt. Signatures do not apply: the socket itself is
authenticated with the app-level token."""

from __future__ import annotations

from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from bot.ops.verify import RequestStats
from bot.slack.payloads import problem


class CheckedSocketModeHandler(AsyncSocketModeHandler):
    def __init__(self, app: AsyncApp, app_token: str | None = None) -> None:
        super().__init__(app, app_token)
        self.stats = RequestStats(where="Socket Mode")  # payloads by outcome, as HttpServer.stats

    async def handle(self, client: SocketModeClient, req: SocketModeRequest) -> None:  # type: ignore[override]
        wrong = problem(req.payload)
        if wrong:
            self.stats.refused("malformed", wrong)
            await client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))
            return
        self.stats.accepted()
        await super().handle(client, req)
