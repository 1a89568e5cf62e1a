"""The Bolt app: services built once from settings, thin listeners, and the HTTP server.

Listeners parse, acknowledge and hand the work to a background task, so every request is
answered well inside Slack's 3 seconds. `create_app(settings)` gives the app and its
services; `serve_http(app, ...)` (from bot.http_server) runs it on aiohttp (port 0 in tests).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext

from bot import messages
from bot.actions import register_actions
from bot.budgets import BudgetBook, Budgets
from bot.config_command import config_reply
from bot.config_modal import add_config_modal_listener
from bot.context import ContextGatherer, UserDirectory
from bot.http_server import EVENTS_PATH, HttpServer, serve_http
from bot.installs import OAuth, Uninstaller, add_uninstall_listeners
from bot.isolation import check_sandbox, sandbox_limits
from bot.lifecycle import Housekeeping, forget_channel, register_file_events
from bot.logs import configure_logging
from bot.progress import ChannelPacer
from bot.replicas import open_shared_limits, recover_orphans, watch_for_orphans
from bot.run_queue import SharedRunQueue
from bot.runner import EngineConfig, Question, Runner
from bot.scope_files import ScopeFiles
from bot.settings import Settings
from bot.slack_api import SlackPoster, event_team, make_web_client
from bot.slots import RunSlots
from bot.storage import Store
from bot.surfaces import register_surfaces, send_history
from bot.tenants import Tenants, Workspace, attach_tenancy
from bot.uploads import Uploads
from rlm import KeyedLimiter, LLMInterface, interface_from_spec, provider_limits

if TYPE_CHECKING:  # redis is an optional extra, imported only when REDIS_URL is set
    from bot.shared_limits import SharedKeyedLimiter, SharedLimits

__all__ = [
    "EVENTS_PATH",
    "HttpServer",
    "Services",
    "build_app",
    "create_app",
    "serve_http",
    "start_services",
]

logger = logging.getLogger("bot.app")

COMMAND = "/rlm"


@dataclass
class Services:
    """Everything the listeners hand work to, built once per process."""

    settings: Settings
    store: Store
    session: aiohttp.ClientSession
    poster: SlackPoster
    gatherer: ContextGatherer
    uploads: Uploads
    runner: Runner
    llms: tuple[LLMInterface, ...]
    isolation: str = "none"  # the REPL sandbox method runs use
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    # Many workspaces: per-workspace clients and settings, OAuth (None: one bot token).
    tenants: Tenants | None = None
    uninstaller: Uninstaller | None = None
    oauth: OAuth | None = None

    async def workspace(self, team_id: str, context: AsyncBoltContext | None) -> Workspace:
        """What a request from `team_id` is handled with: its own token and settings."""
        assert self.tenants is not None
        if context is None:
            return await self.tenants.workspace(team_id)
        return await self.tenants.workspace(team_id, context.client, context.enterprise_id)

    def spawn_run(
        self,
        work: Coroutine[Any, Any, Any],
        name: str,
        team_id: str,
        context: AsyncBoltContext | None = None,
    ) -> asyncio.Task[Any]:
        """`spawn`, noting the task as one of `team_id`'s runs so an uninstall can stop it."""
        task = self.spawn(work, name)
        if self.tenants is not None:
            enterprise = context.enterprise_id if context is not None else None
            self.tenants.track(team_id, task, enterprise)
        return task

    async def claimed(self, body: dict[str, Any]) -> bool:
        """Whether this delivery of an event is the first: a retry (X-Slack-Retry-Num)
        repeats its event_id, and only the first counts."""
        event_id = body.get("event_id")
        return not event_id or await self.store.claim_event(str(event_id))

    async def runner_for(self, team_id: str) -> Runner:
        """The runner for a run of `team_id` no request carries (a queued run this replica
        claimed): the workspace's own token and settings."""
        if self.tenants is None:
            return self.runner
        client = await self.tenants.client_for(team_id, self.oauth)
        return (await self.tenants.workspace(team_id, client)).runner

    housekeeping: Housekeeping | None = None  # the retention purge, started with the services
    limits: SharedLimits | None = None  # with REDIS_URL: the caps every replica shares
    watchers: list[asyncio.Task[None]] = field(default_factory=list)  # replicas' sweeps

    @property
    def limiters(self) -> KeyedLimiter | SharedKeyedLimiter:
        return self.runner.limiters

    def spawn(self, work: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run `work` after the ack; kept here so shutdown (and tests) can wait for it."""
        task = asyncio.create_task(work, name=name)
        self.tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("%s failed", task.get_name(), exc_info=task.exception())

    async def drain(self) -> None:
        """Wait until no background work is left, including work that work started."""
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)

    async def finish(self, grace: float) -> int:
        """Stop starting runs and give those under way up to `grace` seconds to end; returns
        how many tasks are still going (`close()` then interrupts them)."""
        self.runner.stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.tasks and loop.time() < deadline:
            await asyncio.wait(list(self.tasks), timeout=deadline - loop.time())
        return len(self.tasks)

    async def close(self) -> None:
        if self.housekeeping is not None:
            await self.housekeeping.stop()
        self.runner.stopping = True  # nothing new starts while the rest is cancelled
        for task in list(self.tasks):
            task.cancel()
        await self.drain()
        for watcher in self.watchers:
            watcher.cancel()
        await asyncio.gather(*self.watchers, return_exceptions=True)
        if self.uninstaller is not None:
            await self.uninstaller.close()
        if self.tenants is not None:
            await self.tenants.close()
        await self.uploads.close()
        for llm in self.llms:
            await llm.aclose()
        await self.session.close()
        if self.limits is not None:
            await self.limits.close()
        await self.store.close()


async def start_services(settings: Settings, *, isolation: str | None = None) -> Services:
    """Set up logging, prove the REPL sandbox (unless `isolation` says how it was proved),
    open the database (migrating it), build clients and engine settings, recover runs.

    Raises `rlm.ConfigurationError` for a model setting the engine rejects,
    `bot.isolation.SandboxUnavailable` when the configured sandbox cannot run, ValueError
    for an unusable DATABASE_URL.
    """
    configure_logging(settings.rlm_log_level, settings.secrets)
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
        ),
        budget=BudgetBook(
            store=store,
            budgets=Budgets(
                max_iterations=settings.rlm_max_iterations,
                max_subcalls=settings.rlm_max_subcalls,
                max_run_tokens=settings.rlm_max_run_tokens,
                max_run_seconds=settings.rlm_max_run_seconds,
                daily_tokens=settings.rlm_daily_tokens,
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
                store=store, limits=limits, limit=settings.rlm_max_runs_per_workspace
            )
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
        recovered = await recover_orphans(runner, limits)
        services.watchers = [
            asyncio.create_task(
                watch_for_orphans(runner, limits, settings.rlm_lease_seconds / 2),
                name="orphans",
            ),
            asyncio.create_task(runner.queue.watch(), name="queued runs"),
        ]
    if recovered:
        logger.info("marked %d unfinished run(s) from a previous process interrupted", recovered)
    services.housekeeping = Housekeeping(store, retention_days=settings.rlm_retention_days).start()
    return services


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

    claimed = services.claimed

    @app.command(COMMAND)
    async def on_command(ack: AsyncAck, command: dict[str, Any], context: AsyncBoltContext) -> None:
        words = (command.get("text") or "").split(None, 1)
        verb = words[0].lower() if words else "help"
        question = words[1].strip() if len(words) > 1 else ""
        if verb == "help" or (verb == "ask" and not question):
            await ack(text=messages.USAGE, response_type="ephemeral")
            return
        ws = await services.workspace(command["team_id"], context)
        runner = ws.runner
        if verb == "config":
            await ack()
            services.spawn(answer_config(ws, command, question), name="config")
            return
        if verb == "history":
            await ack()
            services.spawn(send_history(ws, command), name="history")
            return
        if verb == "usage":
            report = await runner.budget.usage_report(command["team_id"])
            report += messages.provider_limits_report(provider_limits())
            await ack(text=report, response_type="ephemeral")
            return
        if verb == "forget":
            await ack()
            services.spawn(forget_channel(services, ws, command), name="forget")
            return
        if verb != "ask":
            await ack(text=messages.unknown_subcommand(words[0]), response_type="ephemeral")
            return
        await ack()
        services.spawn_run(
            runner.ask(
                Question(
                    team_id=command["team_id"],
                    channel_id=command["channel_id"],
                    user_id=command["user_id"],
                    text=question,
                    trigger="command",
                    scope="channel",
                    response_url=command.get("response_url"),
                )
            ),
            name="command",
            team_id=command["team_id"],
            context=context,
        )

    async def answer_config(ws: Workspace, command: dict[str, Any], text: str) -> None:
        assert services.tenants is not None
        reply = await config_reply(
            book=services.tenants.book,
            client=ws.poster.client,
            team_id=command["team_id"],
            user_id=command["user_id"],
            text=text,
            trigger_id=command.get("trigger_id"),
            channel_id=command["channel_id"],
        )
        if not reply:  # the settings form opened
            return
        await ws.poster.tell_user(
            command["channel_id"],
            command["user_id"],
            reply,
            response_url=command.get("response_url"),
        )

    async def answer_mention(
        body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        if not await claimed(body):
            return
        team_id = event_team(body, event)
        ws = await services.workspace(team_id, context)
        channel, ts, thread_ts = event["channel"], event["ts"], event.get("thread_ts")
        await ws.keep_attached(event)
        question = await ws.question_in(event)
        if not question:
            await ws.poster.try_post(channel, messages.MENTION_USAGE, thread_ts=thread_ts or ts)
            return
        await ws.runner.ask(
            Question(
                team_id=team_id,
                channel_id=channel,
                user_id=event.get("user") or "",
                text=question,
                trigger="mention",
                scope="thread" if thread_ts else "channel",
                thread_ts=thread_ts or ts,
                exclude_ts=(ts,),
            )
        )

    @app.event("app_mention")
    async def on_mention(
        body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        services.spawn_run(
            answer_mention(body, event, context),
            name="mention",
            team_id=event_team(body, event),
            context=context,
        )

    async def keep_files(
        body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        if not await claimed(body):
            return
        team_id = event_team(body, event)
        uploads = (await services.workspace(team_id, context)).uploads
        if event.get("type") == "file_shared":
            found = [(event["channel_id"], event["file_id"], None, None)]
        else:
            found = [
                (event["channel"], f["id"], event["ts"], event.get("thread_ts"))
                for f in event.get("files") or []
            ]
        for channel, file_id, message_ts, thread_ts in found:
            await uploads.ingest(
                team_id=team_id,
                channel_id=channel,
                file_id=file_id,
                user_id=event.get("user_id") or event.get("user"),
                message_ts=message_ts,
                thread_ts=thread_ts,
            )

    @app.event("file_shared")
    async def on_file_shared(
        body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        services.spawn(keep_files(body, event, context), name="file_shared")

    @app.event({"type": "message", "subtype": "file_share"})
    async def on_file_message(
        body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        services.spawn(keep_files(body, event, context), name="file_share")

    if services.uninstaller is not None:
        add_uninstall_listeners(app, services.uninstaller, services.spawn)
    if services.tenants is not None:
        add_config_modal_listener(app, services.tenants.book)

    register_file_events(app, services, claimed, event_team)

    @app.event("message")
    async def on_message() -> None:
        """Other messages need only the ack: a mention also arrives as app_mention."""

    register_actions(app, services)

    return app


async def create_app(settings: Settings) -> tuple[AsyncApp, Services]:
    services = await start_services(settings)
    return build_app(services), services
