"""Installing the app the way a browser does: the install page, its state cookie, Slack's
approval (a code the loopback Slack server issues), and the redirect back to the app.

Tests never follow the authorize link anywhere: they read it, check it points at the
configured (loopback) authorize URL with the app's client id, and take its `state`.
"""

from __future__ import annotations

import html
import json
import re
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

import aiohttp
from cryptography.fernet import Fernet
from slack_oauth import CLIENT_ID, CLIENT_SECRET, STATE_SECRET
from slack_server import SlackServer

ENCRYPTION_KEY = Fernet.generate_key().decode()
OLD_KEY = Fernet.generate_key().decode()


def oauth_settings(slack: SlackServer, **extra: Any) -> dict[str, Any]:
    """Settings overrides that turn OAuth installs on against the loopback Slack server."""
    return {
        "slack_bot_token": None,
        "slack_client_id": CLIENT_ID,
        "slack_client_secret": CLIENT_SECRET,
        "slack_state_secret": STATE_SECRET,
        "rlm_encryption_key": ENCRYPTION_KEY,
        "slack_authorize_url": slack.url + "/oauth/v2/authorize",
        **extra,
    }


@dataclass
class InstallPage:
    status: int
    cookie: str  # "name=value", as the browser would send it back
    authorize_url: str
    state: str


@dataclass
class Redirected:
    status: int
    body: str


class Browser:
    """One browser's visits to the app's install pages (cookies kept by hand: they are Secure,
    and the test server speaks plain HTTP on loopback)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())

    async def close(self) -> None:
        await self.session.close()

    async def install_page(self) -> InstallPage:
        async with self.session.get(self.base_url + "/slack/install") as response:
            body = await response.text()
            cookie = response.headers.get("Set-Cookie", "").split(";", 1)[0]
        match = re.search(r'<a href="([^"]+)"', body)
        assert match, "the install page has no authorize link"
        url = html.unescape(match.group(1))
        state = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["state"][0]
        return InstallPage(response.status, cookie, url, state)

    async def redirect(self, *, code: str, state: str | None, cookie: str | None) -> Redirected:
        params = {"code": code} | ({"state": state} if state is not None else {})
        headers = {"Cookie": cookie} if cookie else {}
        async with self.session.get(
            self.base_url + "/slack/oauth_redirect", params=params, headers=headers
        ) as response:
            return Redirected(response.status, await response.text())

    async def install(
        self,
        slack: SlackServer,
        team_id: str | None,
        *,
        enterprise_id: str | None = None,
        rotation: bool = False,
        expires_in: int = 43200,
    ) -> Redirected:
        page = await self.install_page()
        code = slack.issue_code(
            team_id, enterprise_id=enterprise_id, rotation=rotation, expires_in=expires_in
        )
        done = await self.redirect(code=code, state=page.state, cookie=page.cookie)
        assert done.status == 200, done.body
        return done


def org_event(event: dict[str, Any], *, team_id: str, enterprise_id: str) -> str:
    """An Events API body from a workspace of an organisation-wide install."""
    return json.dumps(
        {
            "token": "legacy",
            "team_id": team_id,
            "enterprise_id": enterprise_id,
            "api_app_id": "A1",
            "event": event,
            "type": "event_callback",
            "event_id": f"EvOrg{time.monotonic_ns()}",
            "event_time": int(time.time()),
            "is_ext_shared_channel": False,
            "authorizations": [
                {
                    "enterprise_id": enterprise_id,
                    "team_id": None,
                    "user_id": "UBOT",
                    "is_bot": True,
                    "is_enterprise_install": True,
                }
            ],
        }
    )
