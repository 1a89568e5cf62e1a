"""Where the app is put together: services built once from settings, listeners registered.

Listeners (bot.listeners) parse, acknowledge and hand the work to a background task, so
every request is answered well inside Slack's 3 seconds. `create_app(settings)` gives the
app and its services; `serve_http(app, ...)` (from bot.ops.http_server) runs it on aiohttp
(port 0 in tests).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.gather.context import ContextGatherer, UserDirectory
from bot.gather.scope_files import ScopeFiles
from bot.gather.uploads import Uploads
from bot.listeners.actions import register_actions
from bot.listeners.commands import register_commands
from bot.listeners.events import register_message_events
from bot.listeners.lifecycle import register_file_events
from bot.listeners.surfaces import register_surfaces
from bot.ops.health import Readiness
from bot.ops.housekeeping import Housekeeping
from bot.ops.http_server import EVENTS_PATH, HttpServer, serve_http
from bot.ops.isolation import check_sandbox, sandbox_limits
from bot.ops.logs import configure_logging
from bot.ops.replicas import LeaseKeeper, open_shared_limits, recover_orphans
from bot.presence.pacer import ChannelPacer
from bot.runs.budgets import BudgetBook, Budgets
from bot.runs.keeping import RunKeeper
from bot.runs.queue import SharedRunQueue
from bot.runs.runner import EngineConfig, Runner
from bot.runs.slots import RunSlots
from bot.services import Services
from bot.settings import Settings
from bot.slack.api import SlackPoster, event_team, make_web_client
from bot.storage import Store
from bot.storage._crypto import parse_keys
from bot.storage._tenants import TenantStore
from bot.workspaces.config_modal import add_config_modal_listener
from bot.workspaces.installs import Uninstaller, add_uninstall_listeners, build_oauth
from bot.workspaces.settings import WorkspaceSettingsBook, bounds_from, defaults_from
from bot.workspaces.tenants import Tenants
from rlm import KeyedLimiter, LLMInterface, interface_from_spec

if TYPE_CHECKING:  # redis is an optional extra, imported only when REDIS_URL is set
    from bot.runs.shared_limits import SharedLimits

__all__ = [
    "EVENTS_PATH",
    "HttpServer",
    "Services",
    "build_app",
    "create_app",
    "readiness_of",
    "serve_http",
    "start_services",
]

logger = logging.getLogger("bot.app")


async def start_services(settings: Settings, *, isolation: str | None = None) -> Services:
    """Set up logging, prove the REPL sandbox (unless `isolation` says how it was proved),
    open the database (migrating it), build clients and engine settings, recover runs.

    Raises `rlm.ConfigurationError` for a model setting the engine rejects,
    `bot.ops.isolation.SandboxUnavailable` when the configured sandbox cannot run, ValueError
    for an unusable DATABASE_URL.
    """
    configure_logging(settings.rlm_log_level, settings.secrets, log_format=settings.rlm_log_format)
    llms = tuple(
        interface_from_spec(
            spec,
            api_key=key,
            base_url=url,
            timeout=settings.rlm_provider_timeout,
            max_retries=settings.rlm_provider_retries,
        )
        for spec in (settings.rlm_root_model, settings.rlm_sub_model)
        for key, url in [settings.provider_endpoint(spec)]
    )
    if isolation is None:
        isolation = await check_sandbox(
            sandbox_limits(
                settings.rlm_sandbox,
                settings.rlm_require_sandbox,
                database_url=settings.database_url,
                packages=settings.sandbox_packages,
            )
        )
    store = await Store.open(settings.database_url)
    limits: SharedLimits | None = None
    session: aiohttp.ClientSession | None = None
    try:
        if settings.redis_url:
            limits = await open_shared_limits(settings)
        session = aiohttp.ClientSession()
        return await _build_services(settings, llms, store, session, isolation, limits)
    except BaseException:
        if session is not None:
            await session.close()
        if limits is not None:
            await limits.close()
        await store.close()
        raise


async def _build_services(
    settings: Settings,
    llms: tuple[LLMInterface, ...],
    store: Store,
    session: aiohttp.ClientSession,
    isolation: str,
    limits: SharedLimits | None = None,
) -> Services:
    client = make_web_client(settings.slack_bot_token, settings.slack_api_url, session)
    poster = SlackPoster(client)
    gatherer = ContextGatherer(
        client=client,
        store=store,
        users=UserDirectory(client),
        history_messages=settings.rlm_history_messages,
        history_days=settings.rlm_history_days,
    )
    runner = Runner(
        engine=EngineConfig(
            root_llm=llms[0],
            sub_llm=llms[1],
            root_model=settings.rlm_root_model,
            sub_model=settings.rlm_sub_model,
            prompt_mode=settings.rlm_prompt_mode,
            sandbox_limits=sandbox_limits(
                settings.rlm_sandbox,
                settings.rlm_require_sandbox,
                database_url=settings.database_url,
                packages=settings.sandbox_packages,
            ),
            provider_timeout=settings.rlm_provider_timeout,
            max_map_chunks=settings.rlm_max_map_chunks,
            max_prompt_bytes=settings.rlm_max_prompt_bytes,
            provider_max_concurrency=settings.rlm_provider_max_concurrency,
            prices=settings.prices,
        ),
        budget=BudgetBook(
            store=store,
            budgets=Budgets(
                max_iterations=settings.rlm_max_iterations,
                max_subcalls=settings.rlm_max_subcalls,
                max_run_tokens=settings.rlm_max_run_tokens,
                max_run_seconds=settings.rlm_max_run_seconds,
                daily_tokens=settings.rlm_daily_tokens,
                max_run_cost=settings.rlm_max_run_cost_usd,
                daily_cost=settings.rlm_daily_cost_usd,
            ),
        ),
        store=store,
        poster=poster,
        gatherer=gatherer,
        pacer=ChannelPacer(settings.rlm_progress_interval),
        limiters=(
            KeyedLimiter(settings.rlm_max_parallel_calls)
            if limits is None
            else limits.keyed("subcalls", settings.rlm_max_parallel_calls)
        ),
        slots=RunSlots(settings.rlm_max_runs_per_workspace),
        edit_interval=settings.rlm_status_edit_interval,
        wait_notice=settings.rlm_status_wait_notice,
        owner=limits.replica_id if limits is not None else None,
        queue=(
            None
            if limits is None
            else SharedRunQueue(
                store=store,
                limits=limits,
                limit=settings.rlm_max_runs_per_workspace,
                lease_seconds=settings.rlm_lease_seconds,
            )
        ),
        keeper=RunKeeper(
            store,
            owner=limits.replica_id if limits is not None else None,
            lease_seconds=settings.rlm_lease_seconds if limits is not None else None,
            retry_seconds=settings.rlm_db_retry_seconds,
        ),
    )
    uploads = Uploads(
        client=client,
        poster=poster,
        store=store,
        session=session,
        api_url=settings.slack_api_url,
        max_file_bytes=settings.rlm_max_file_bytes,
    )
    gatherer.scope_files = ScopeFiles(
        client=client,
        store=store,
        uploads=uploads,
        max_files=settings.rlm_max_files_per_question,
        max_bytes=settings.rlm_max_file_bytes_per_question,
    )
    services = Services(
        settings=settings,
        store=store,
        session=session,
        poster=poster,
        gatherer=gatherer,
        uploads=uploads,
        runner=runner,
        llms=llms,
        isolation=isolation,
        limits=limits,
    )
    await attach_tenancy(services, client)
    if limits is None:  # one process: whatever is unfinished was left by the previous one
        if services.oauth is not None and services.tenants is not None:  # tokens per workspace
            recovered = await services.tenants.recover(services.oauth.installations)
        else:
            recovered = await runner.recover()
    else:  # replicas: only the runs of those whose lease ran out
        assert runner.queue is not None
        runner.queue.runner, runner.queue.spawn = runner, services.spawn
        runner.queue.runner_for = services.runner_for
        recovered = await recover_orphans(runner)
        lease = settings.rlm_lease_seconds
        services.watchers = [
            asyncio.create_task(LeaseKeeper(runner, lease, lease / 3).watch(), name="leases"),
            asyncio.create_task(runner.queue.watch(), name="queued runs"),
        ]
    if recovered:
        logger.info("marked %d unfinished run(s) from a previous process interrupted", recovered)
    services.housekeeping = Housekeeping(store, retention_days=settings.rlm_retention_days).start()
    return services


async def attach_tenancy(services: Services, client: AsyncWebClient) -> None:
    """Give `services` its per-workspace parts: settings, OAuth (when on), uninstalls.
    With more than one encryption key, stored tokens are first written again with the
    newest, so the older keys can be dropped after one start."""
    settings = services.settings
    tenant_store = TenantStore(services.store)
    services.tenants = Tenants(
        services=services,
        rows=tenant_store,
        book=WorkspaceSettingsBook(
            tenants=tenant_store, defaults=defaults_from(settings), bounds=bounds_from(settings)
        ),
    )
    if settings.oauth_enabled:
        services.oauth = build_oauth(
            settings, store=services.store, tenants=tenant_store, client=client
        )
        # A key that cannot read the stored tokens would fail every event of those
        # workspaces (and the re-encryption below): refuse to start, saying which key.
        keys = await services.oauth.installations.check_key()
        if not keys.ok:
            raise ValueError(keys.problem())
        if len(parse_keys(settings.rlm_encryption_key)) > 1:
            count = await services.oauth.installations.reencrypt()
            logger.info("re-encrypted %d stored token(s) with the newest key", count)
    services.uninstaller = Uninstaller(
        installations=services.oauth.installations if services.oauth else None,
        tenants=tenant_store,
        runs=services.tenants,
        retention_days=settings.rlm_retention_days,
        purge_at_once=settings.rlm_purge_on_uninstall,
    )
    services.uninstaller.start()


def readiness_of(services: Services) -> Readiness:
    """What /readyz checks for these services: their database, and Redis when shared."""
    limits = services.limits
    return Readiness(services.store, limits.redis if limits is not None else None)


def build_app(services: Services) -> AsyncApp:
    settings = services.settings
    oauth: dict[str, Any] = {}
    if services.oauth is not None:
        oauth = {"oauth_flow": services.oauth.flow, "authorize": services.oauth.authorize}
    app = AsyncApp(
        client=services.poster.client,
        signing_secret=settings.slack_signing_secret,
        request_verification_enabled=not settings.socket_mode,
        process_before_response=False,
        name="rlm",
        **oauth,
    )
    register_surfaces(app, services)  # before the catch-all message listener

    register_commands(app, services)
    register_message_events(app, services)

    if services.uninstaller is not None:
        add_uninstall_listeners(app, services.uninstaller, services.spawn)
    if services.tenants is not None:
        add_config_modal_listener(app, services.tenants.book)

    register_file_events(app, services, services.claimed, event_team)

    @app.event("message")
    async def on_message() -> None:
        """Other messages need only the ack: a mention also arrives as app_mention."""

    register_actions(app, services)

    return app


async def create_app(settings: Settings) -> tuple[AsyncApp, Services]:
    services = await start_services(settings)
    return build_app(services), services
