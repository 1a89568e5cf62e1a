"""Installing into many workspaces: Slack's OAuth v2 flow, its pages, and uninstalls.

With SLACK_CLIENT_ID, SLACK_CLIENT_SECRET and SLACK_STATE_SECRET set, `build_oauth` gives
Bolt an OAuth flow (install page `/slack/install`, redirect `/slack/oauth_redirect`) whose
code exchange and token refreshes go to SLACK_API_URL, and an authorize that finds each
workspace's token in our encrypted installation store, refreshing it when rotation is on.
`oauth_routes` serves the two pages on the HTTP server; in Socket Mode `serve_install_pages`
runs a small HTTP listener for them alone. `Uninstaller` handles `app_uninstalled` and
`tokens_revoked`: the workspace's tokens are deleted at once, its runs stopped, and its data
purged after RLM_RETENTION_DAYS (or at once with RLM_PURGE_ON_UNINSTALL).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp, AsyncBoltContext
from slack_bolt.authorization.async_authorize import AsyncInstallationStoreAuthorize
from slack_bolt.oauth.async_oauth_flow import AsyncOAuthFlow
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_sdk.oauth.installation_store import Installation
from slack_sdk.web.async_client import AsyncWebClient

from bot.settings import Settings
from bot.storage import Store
from bot.storage._crypto import TokenCipher
from bot.storage._installations import InstallationStore, StateStore
from bot.storage._tenants import TenantStore

if TYPE_CHECKING:
    from bot.workspaces.tenants import Tenants

logger = logging.getLogger("bot.installs")

INSTALL_PATH = "/slack/install"
REDIRECT_PATH = "/slack/oauth_redirect"
STATE_SECONDS = 600
PURGE_EVERY_SECONDS = 3600.0


class _Installations(InstallationStore):
    """The installation store, noting reinstalls and which organisation a workspace is in."""

    def __init__(self, *, tenants: TenantStore, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tenants = tenants

    async def async_save(self, installation: Installation) -> None:
        await super().async_save(installation)
        owner = installation.enterprise_id if installation.is_enterprise_install else None
        owner = owner or installation.team_id
        if owner:  # installed again before its purge: keep its data
            await self.tenants.clear_uninstall(owner)
        if installation.enterprise_id and installation.team_id:
            await self.tenants.link_enterprise(installation.team_id, installation.enterprise_id)
        logger.info(
            "installation of %s saved (installed, or its tokens refreshed)%s",
            owner,
            " organisation-wide" if installation.is_enterprise_install else "",
        )


@dataclass
class OAuth:
    flow: AsyncOAuthFlow
    authorize: AsyncInstallationStoreAuthorize
    installations: InstallationStore
    states: StateStore


def build_oauth(
    settings: Settings, *, store: Store, tenants: TenantStore, client: AsyncWebClient
) -> OAuth:
    """The OAuth flow and authorize for `settings` (which must have OAuth on).

    `client` carries SLACK_API_URL and the app's HTTP session: the code exchange and token
    refreshes go through it, never to a URL of the SDK's own choosing.
    """
    assert settings.slack_client_id and settings.slack_client_secret
    assert settings.slack_state_secret and settings.rlm_encryption_key
    installations = _Installations(
        tenants=tenants,
        store=store,
        client_id=settings.slack_client_id,
        cipher=TokenCipher(settings.rlm_encryption_key),
    )
    states = StateStore(
        store=store, secret=settings.slack_state_secret, expiration_seconds=STATE_SECONDS
    )
    oauth_settings = AsyncOAuthSettings(
        client_id=settings.slack_client_id,
        client_secret=settings.slack_client_secret,
        scopes=[s.strip() for s in settings.slack_scopes.split(",") if s.strip()],
        redirect_uri=settings.slack_redirect_uri,
        install_path=INSTALL_PATH,
        redirect_uri_path=REDIRECT_PATH,
        authorization_url=settings.slack_authorize_url,
        installation_store=installations,
        token_rotation_expiration_minutes=settings.slack_token_rotation_minutes,
        state_store=states,
        state_expiration_seconds=STATE_SECONDS,
        logger=logging.getLogger("slack_bolt.oauth"),
    )
    authorize = AsyncInstallationStoreAuthorize(
        logger=logging.getLogger("slack_bolt.authorize"),
        installation_store=installations,
        client_id=settings.slack_client_id,
        client_secret=settings.slack_client_secret,
        token_rotation_expiration_minutes=settings.slack_token_rotation_minutes,
        # The cache is keyed by token and read after the store is asked for one, so a
        # deleted installation still stops working at once; it saves an auth.test a request.
        cache_enabled=True,
        client=client,  # token refreshes go to SLACK_API_URL
    )
    flow = AsyncOAuthFlow(client=client, settings=oauth_settings)
    return OAuth(flow=flow, authorize=authorize, installations=installations, states=states)


def oauth_routes(flow: AsyncOAuthFlow) -> list[web.RouteDef]:
    """The install page and the redirect, as aiohttp routes."""

    async def install(request: web.Request) -> web.Response:
        return await to_aiohttp_response(await flow.handle_installation(await _bolt(request)))

    async def redirect(request: web.Request) -> web.Response:
        return await to_aiohttp_response(await flow.handle_callback(await _bolt(request)))

    return [web.get(flow.install_path, install), web.get(flow.redirect_uri_path, redirect)]


async def _bolt(request: web.Request) -> Any:
    return await to_bolt_request(request)


async def serve_install_pages(flow: AsyncOAuthFlow, *, host: str, port: int) -> web.AppRunner:
    """Socket Mode has no HTTP server of its own: serve the install pages on `port`."""
    web_app = web.Application(client_max_size=64 * 1024)
    web_app.add_routes(oauth_routes(flow))
    runner = web.AppRunner(web_app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


@dataclass
class Uninstaller:
    """Deletes a workspace's tokens, stops its runs and purges its data when it is due."""

    installations: InstallationStore | None
    tenants: TenantStore
    runs: Tenants
    retention_days: int
    purge_at_once: bool
    _loop: asyncio.Task[None] | None = field(default=None, repr=False)

    async def uninstalled(
        self, *, team_id: str | None, enterprise_id: str | None, is_enterprise_install: bool
    ) -> None:
        owner = enterprise_id if is_enterprise_install and enterprise_id else team_id
        if not owner:
            logger.warning("an uninstall named no workspace; ignored")
            return
        if self.installations is not None:
            scope = None if is_enterprise_install else team_id
            await self.installations.async_delete_all(enterprise_id=enterprise_id, team_id=scope)
        self.runs.forget_tokens()
        stopped = await self.runs.stop_runs(
            team_id=None if is_enterprise_install else team_id, enterprise_id=enterprise_id
        )
        logger.info("uninstalled from %s: tokens deleted, %d run(s) stopped", owner, stopped)
        if self.purge_at_once or self.retention_days == 0:
            await self._purge(owner, is_enterprise_install)
            return
        await self.tenants.record_uninstall(
            owner,
            is_enterprise=is_enterprise_install,
            purge_after=datetime.now(UTC) + timedelta(days=self.retention_days),
        )

    async def _purge(self, owner: str, is_enterprise: bool) -> None:
        purged = await self.tenants.purge(owner, is_enterprise=is_enterprise)
        self.runs.forget_links()
        logger.info(
            "purged %s: %d run(s), %d file(s) of %d workspace(s)",
            owner,
            purged.runs,
            purged.files,
            len(purged.teams),
        )

    async def purge_due(self, now: datetime | None = None) -> int:
        """Purge every uninstall whose retention has run out; returns how many."""
        due = await self.tenants.due_uninstalls(now)
        for owner, is_enterprise in due:
            await self._purge(owner, is_enterprise)
        return len(due)

    def start(self) -> None:
        async def every_hour() -> None:
            while True:
                try:
                    await self.purge_due()
                except Exception:
                    logger.exception("purging uninstalled workspaces failed; will try again")
                await asyncio.sleep(PURGE_EVERY_SECONDS)

        self._loop = asyncio.create_task(every_hour(), name="uninstall-purge")

    async def close(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
            self._loop = None


def add_uninstall_listeners(
    app: AsyncApp,
    uninstaller: Uninstaller,
    spawn: Callable[[Coroutine[Any, Any, Any], str], Any],
) -> None:
    """`app_uninstalled`, and `tokens_revoked` naming a bot token, end the app's work there."""

    async def uninstalled(body: dict[str, Any], context: AsyncBoltContext) -> None:
        await uninstaller.uninstalled(
            team_id=context.team_id or body.get("team_id"),
            enterprise_id=context.enterprise_id or body.get("enterprise_id"),
            is_enterprise_install=bool(context.is_enterprise_install),
        )

    @app.event("app_uninstalled")
    async def on_uninstalled(body: dict[str, Any], context: AsyncBoltContext) -> None:
        spawn(uninstalled(body, context), "app_uninstalled")

    @app.event("tokens_revoked")
    async def on_tokens_revoked(
        body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        # Only a revoked bot token ends the app's work there; user tokens it does not use.
        if (event.get("tokens") or {}).get("bot"):
            spawn(uninstalled(body, context), "tokens_revoked")
