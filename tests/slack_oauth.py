"""Slack's OAuth v2 side of the loopback Slack server: codes, per-workspace tokens, refresh.

`OAuthGrants` is mixed into `SlackServer`. A test issues a code for a workspace (as Slack
does when someone approves an install), the app exchanges it at oauth.v2.access with its
client id and secret, and gets a bot token of that workspace's own; with rotation on, a
token that expires and a refresh token (grant_type=refresh_token) that replaces both. Every
Web API call is then checked against the token's workspace: a token of one workspace used on
another's channel gets `channel_not_found`, as in Slack.
"""

from __future__ import annotations

import base64
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

CLIENT_ID = "1111.2222"
CLIENT_SECRET = "test-client-secret-0123456789"
STATE_SECRET = "test-state-secret-0123456789"


@dataclass
class Grant:
    """What one issued bot token may do."""

    team_id: str | None  # None for an organisation-wide install
    enterprise_id: str | None
    expires_at: float | None = None
    revoked: bool = False

    @property
    def org_wide(self) -> bool:
        return self.team_id is None


class OAuthGrants:
    """Codes, tokens and refresh tokens of OAuth installs (state kept under `_oauth_lock`)."""

    def _init_oauth(self) -> None:
        self._oauth_lock = threading.Lock()
        self.client_id = CLIENT_ID
        self.client_secret = CLIENT_SECRET
        self.grants: dict[str, Grant] = {}  # bot token -> grant
        self._codes: dict[str, dict[str, Any]] = {}
        self._refresh: dict[str, tuple[str, dict[str, Any]]] = {}  # refresh token -> (token, code)
        self.refresh_tokens: list[str] = []  # every refresh token handed out
        self.channel_teams: dict[str, str] = {}  # channel -> team that owns it
        self.team_enterprises: dict[str, str] = {}  # team -> its organisation

    def issue_code(
        self,
        team_id: str | None,
        *,
        enterprise_id: str | None = None,
        rotation: bool = False,
        expires_in: int = 43200,
        installer: str = "UINSTALLER",
    ) -> str:
        """A code as Slack gives the browser after an install is approved (team_id None with
        enterprise_id: an organisation-wide install)."""
        code = "code-" + secrets.token_hex(8)
        with self._oauth_lock:
            self._codes[code] = {
                "team_id": team_id,
                "enterprise_id": enterprise_id,
                "rotation": rotation,
                "expires_in": expires_in,
                "installer": installer,
            }
        return code

    def tokens_of(self, team_id: str | None, enterprise_id: str | None = None) -> list[str]:
        with self._oauth_lock:
            return [
                t
                for t, g in self.grants.items()
                if g.team_id == team_id and g.enterprise_id == enterprise_id
            ]

    def revoke(self, team_id: str | None, enterprise_id: str | None = None) -> None:
        """The workspace (or organisation) removed the app: its tokens stop working."""
        with self._oauth_lock:
            for grant in self.grants.values():
                if grant.team_id == team_id and grant.enterprise_id == enterprise_id:
                    grant.revoked = True

    def expire(self, token: str) -> None:
        with self._oauth_lock:
            self.grants[token].expires_at = time.time() - 1

    # -- serving -------------------------------------------------------------------------------

    def _client_ok(self, headers: dict[str, str], params: dict[str, Any]) -> bool:
        auth = headers.get("authorization", "")
        if auth.startswith("Basic "):
            try:
                given_id, _, given_secret = base64.b64decode(auth[6:]).decode().partition(":")
            except ValueError:
                return False
        else:
            given_id = str(params.get("client_id", ""))
            given_secret = str(params.get("client_secret", ""))
        return given_id == self.client_id and secrets.compare_digest(
            given_secret, self.client_secret
        )

    def oauth_access(self, headers: dict[str, str], params: dict[str, Any]) -> dict[str, Any]:
        """oauth.v2.access: exchange a code, or refresh a rotating token."""
        if not self._client_ok(headers, params):
            return {"ok": False, "error": "invalid_client_id"}
        with self._oauth_lock:
            if params.get("grant_type") == "refresh_token":
                held = self._refresh.pop(str(params.get("refresh_token")), None)
                if held is None:
                    return {"ok": False, "error": "invalid_refresh_token"}
                old, grant_info = held
                self.grants[old].revoked = True
                return self._grant(grant_info)
            info = self._codes.pop(str(params.get("code")), None)
            if info is None:
                return {"ok": False, "error": "invalid_code"}
            return self._grant(info)

    def _grant(self, info: dict[str, Any]) -> dict[str, Any]:
        rotation = info["rotation"]
        token = ("xoxe.xoxb-1-" if rotation else "xoxb-") + secrets.token_hex(12)
        expires_at = time.time() + info["expires_in"] if rotation else None
        self.grants[token] = Grant(info["team_id"], info["enterprise_id"], expires_at)
        team_id, enterprise_id = info["team_id"], info["enterprise_id"]
        reply: dict[str, Any] = {
            "ok": True,
            "app_id": "A1",
            "authed_user": {"id": info["installer"]},
            "scope": "app_mentions:read,channels:history,chat:write,commands,users:read",
            "token_type": "bot",
            "access_token": token,
            "bot_user_id": "UBOT",
            "team": {"id": team_id, "name": f"Team {team_id}"} if team_id else None,
            "enterprise": {"id": enterprise_id, "name": "Org"} if enterprise_id else None,
            "is_enterprise_install": team_id is None,
        }
        if rotation:
            refresh = "xoxe-1-" + secrets.token_hex(12)
            self._refresh[refresh] = (token, info)
            self.refresh_tokens.append(refresh)
            reply |= {"refresh_token": refresh, "expires_in": info["expires_in"]}
        return reply

    def grant_error(self, token: str, params: dict[str, Any]) -> str | None:
        """Why `token` may not make this call (None: it may); only for issued tokens."""
        with self._oauth_lock:
            grant = self.grants.get(token)
            if grant is None:
                return "invalid_auth"
            if grant.revoked:
                return "token_revoked"
            if grant.expires_at is not None and grant.expires_at < time.time():
                return "token_expired"
            owner = self.channel_teams.get(str(params.get("channel") or ""))
        if owner is None:
            return None
        if grant.org_wide:
            return (
                None
                if self.team_enterprises.get(owner) == grant.enterprise_id
                else ("channel_not_found")
            )
        return None if owner == grant.team_id else "channel_not_found"

    def auth_test_for(self, token: str) -> dict[str, Any]:
        with self._oauth_lock:
            grant = self.grants[token]
        reply: dict[str, Any] = {
            "url": "https://test.slack.com/",
            "team": "Test",
            "user": "rlm",
            "team_id": grant.team_id,
            "user_id": "UBOT",
            "bot_id": "BBOT",
            "is_enterprise_install": grant.org_wide,
        }
        if grant.enterprise_id:
            reply["enterprise_id"] = grant.enterprise_id
        return reply
