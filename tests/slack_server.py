"""A Slack Web API server on loopback, for driving the app end to end.

`SlackServer` runs on its own event loop in a background thread (port 0), serves a small
workspace (tests/slack_workspace.py: users, channels, messages, threads, files, cursors),
checks the bot token, answers 429s (on demand, or a seeded share of a method's calls) and
errors on demand, serves file downloads that need the
token (a sign-in page otherwise, as Slack does) and records every call. It also speaks
Socket Mode: apps.connections.open hands out its own WebSocket, where `send_socket`
delivers envelopes and the app's acks are kept in `socket_acks`.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from slack_oauth import OAuthGrants
from slack_runs import RunSurfaces
from slack_surfaces import SurfacesMixin
from slack_views import Views
from slack_workspace import BOT_ID, BOT_USER, SlackError

__all__ = ["APP_TOKEN", "BOT_ID", "BOT_TOKEN", "BOT_USER", "SIGNING_SECRET", "SlackServer"]

BOT_TOKEN = "xoxb-test-token"
APP_TOKEN = "xapp-test-token"
SIGNING_SECRET = "test-signing-secret"
LOGIN_PAGE = b"<!DOCTYPE html><html><head><title>Slack</title></head><body>Sign in</body></html>"


@dataclass
class Call:
    method: str  # a Web API method, "files.download" or "response_url"
    params: dict[str, Any]
    headers: dict[str, str]  # names lower-cased
    path: str
    status: int = 200
    error: str | None = None
    at: float = field(default_factory=time.monotonic)

    @property
    def token(self) -> str | None:
        auth = self.headers.get("authorization", "")
        return auth.removeprefix("Bearer ").strip() or None


class SlackServer(SurfacesMixin, RunSurfaces, OAuthGrants, Views):
    def __init__(self, *, token: str = BOT_TOKEN, team_id: str = "T1") -> None:
        super().__init__(token=token, team_id=team_id)
        self._init_oauth()
        self.calls: list[Call] = []
        self.socket_acks: dict[str, Any] = {}
        self.socket_connections = 0
        self._socket_outbox: asyncio.Queue[dict[str, Any]] | None = None
        self._rate_limits: dict[str, list[float]] = {}
        self._rate_limit_shares: dict[str, tuple[float, float]] = {}
        self._random = random.Random(0)
        self.throttled: Counter[str] = Counter()  # 429s served, by method
        self._failures: dict[str, list[dict[str, Any]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return self.url + "/api/"

    def start(self) -> SlackServer:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the Slack test server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop = self._thread = None

    def __enter__(self) -> SlackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        loop.run_until_complete(self._open())
        self._loop = loop
        ready.set()
        try:
            loop.run_forever()
        finally:
            if self._runner is not None:
                loop.run_until_complete(self._runner.cleanup())
            loop.close()

    async def _open(self) -> None:
        # Uploads as large as a huge answer's file (Slack takes files up to 1 GB).
        app = web.Application(client_max_size=128 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_get("/files-pri/{file_id}/{name}", self._download)
        app.router.add_post("/response/{id}", self._response_url)
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_get("/socket", self._socket)
        self._socket_outbox = asyncio.Queue()
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    def rate_limit(self, method: str, times: int = 1, retry_after: float = 0) -> None:
        """Answer the next `times` calls to `method` with 429 and Retry-After."""
        with self._lock:
            self._rate_limits.setdefault(method, []).extend([retry_after] * times)

    def rate_limit_share(self, method: str, share: float, retry_after: float = 0) -> None:
        """Answer a seeded `share` of all later calls to `method` with 429 (0 stops it)."""
        with self._lock:
            self._rate_limit_shares[method] = (share, retry_after)

    def fail(self, method: str, error: str, times: int = 1, **extra: Any) -> None:
        """Answer the next `times` calls to `method` with `{"ok": false, "error": error}`."""
        with self._lock:
            self._failures.setdefault(method, []).extend([{"error": error, **extra}] * times)

    # -- what the app did ----------------------------------------------------------------------

    def calls_to(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method and c.status == 200]

    def posts(self, channel_id: str | None = None, thread_ts: str | None = None) -> list[str]:
        """Texts the app posted with chat.postMessage, in order, filtered by place."""
        return [
            str(c.params.get("text"))
            for c in self.calls_to("chat.postMessage")
            if c.error is None
            and (channel_id is None or c.params.get("channel") == channel_id)
            and (thread_ts is None or c.params.get("thread_ts") == thread_ts)
        ]

    def ephemerals(self, user: str | None = None) -> list[str]:
        """Texts sent to one user only: chat.postEphemeral and response URLs."""
        texts = [
            str(c.params.get("text"))
            for c in self.calls_to("chat.postEphemeral")
            if c.error is None and (user is None or c.params.get("user") == user)
        ]
        return texts + [str(c.params.get("text")) for c in self.calls_to("response_url")]

    # -- serving -------------------------------------------------------------------------------

    async def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            if request.content_type == "application/json":
                params.update(await request.json())
            else:
                params.update(await request.post())
        return params

    def _record(self, call: Call) -> Call:
        with self._lock:
            self.calls.append(call)
        return call

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await self._params(request)
        call = self._record(
            Call(method, params, {k.lower(): v for k, v in request.headers.items()}, request.path)
        )
        with self._lock:
            limited = self._rate_limits.get(method)
            retry_after = limited.pop(0) if limited else None
            share, share_wait = self._rate_limit_shares.get(method, (0.0, 0.0))
            if retry_after is None and share and self._random.random() < share:
                retry_after = share_wait
            failures = self._failures.get(method)
            failure = failures.pop(0) if failures and retry_after is None else None
            if retry_after is not None:
                self.throttled[method] += 1
        if retry_after is not None:
            call.status = 429
            return web.json_response(
                {"ok": False, "error": "ratelimited"},
                status=429,
                headers={"Retry-After": str(int(retry_after))},
            )
        if method == "oauth.v2.access":  # authenticated by the client id and secret
            reply = self.oauth_access(call.headers, params)
            if not reply["ok"]:
                return self._error(call, reply["error"])
            return web.json_response(reply)
        token = call.token or params.get("token")
        if not token:
            return self._error(call, "not_authed")
        issued = token in self.grants
        if issued:
            refused = self.grant_error(token, params)
            if refused is not None:
                return self._error(call, refused)
        elif token != (APP_TOKEN if method == "apps.connections.open" else self.token):
            return self._error(call, "invalid_auth")
        if failure is not None:
            return self._error(call, **failure)
        if issued and method == "auth.test":
            return web.json_response({"ok": True, **self.auth_test_for(token)})
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if handler is None:
            return self._error(call, "unknown_method")
        try:
            body = handler(params)
        except SlackError as exc:
            return self._error(call, exc.error, **exc.extra)
        return web.json_response({"ok": True, **body})

    def _error(self, call: Call, error: str, **extra: Any) -> web.Response:
        call.error = error
        return web.json_response({"ok": False, "error": error, **extra})

    async def _download(self, request: web.Request) -> web.Response:
        call = self._record(
            Call(
                "files.download",
                dict(request.query),
                {k.lower(): v for k, v in request.headers.items()},
                request.path,
            )
        )
        with self._lock:
            limited = self._rate_limits.get("files.download")
            retry_after = limited.pop(0) if limited else None
        if retry_after is not None:
            call.status = 429
            return web.Response(status=429, headers={"Retry-After": str(int(retry_after))})
        file = self.files.get(request.match_info["file_id"])
        if file is None:
            call.status = 404
            return web.Response(status=404)
        good = call.token == self.token or (
            call.token in self.grants and self.grant_error(call.token, {}) is None
        )
        if not good or file["_html_instead"]:
            # Slack answers a download without (or with a wrong) token with its sign-in page.
            return web.Response(body=LOGIN_PAGE, content_type="text/html")
        return web.Response(body=file["_content"], content_type=file["mimetype"])

    def send_socket(self, kind: str, payload: dict[str, Any]) -> str:
        """Deliver a Socket Mode envelope ("slash_commands", "events_api"); its id is returned."""
        assert self._loop is not None and self._socket_outbox is not None
        envelope_id = f"envelope-{self.next_ts()}"
        envelope = {
            "envelope_id": envelope_id,
            "type": kind,
            "payload": payload,
            "accepts_response_payload": kind != "events_api",
            "retry_attempt": 0,
            "retry_reason": "",
        }
        self._loop.call_soon_threadsafe(self._socket_outbox.put_nowait, envelope)
        return envelope_id

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        assert self._socket_outbox is not None
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.socket_connections += 1
        await ws.send_json({"type": "hello", "num_connections": 1})
        outbox = self._socket_outbox

        async def forward() -> None:
            while True:
                await ws.send_json(await outbox.get())

        sender = asyncio.create_task(forward())
        try:
            async for message in ws:
                if message.type == web.WSMsgType.TEXT:
                    data = json.loads(message.data)
                    if "envelope_id" in data:
                        self.socket_acks[data["envelope_id"]] = data.get("payload")
        finally:
            sender.cancel()
            self.socket_connections -= 1
        return ws

    async def _upload(self, request: web.Request) -> web.Response:
        """The upload URL files.getUploadURLExternal hands out: the file's bytes, POSTed."""
        call = self._record(
            Call(
                "files.upload_url",
                {},
                {k.lower(): v for k, v in request.headers.items()},
                request.path,
            )
        )
        if not self.receive_upload(request.match_info["file_id"], await request.read()):
            call.status = 404
            return web.Response(status=404)
        return web.Response(text="OK - uploaded")

    async def _response_url(self, request: web.Request) -> web.Response:
        self._record(
            Call(
                "response_url",
                await request.json(),
                {k.lower(): v for k, v in request.headers.items()},
                request.path,
            )
        )
        return web.Response(text="ok")
