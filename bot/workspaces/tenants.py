"""Serving many workspaces from one process: each workspace's own client, settings and runs.

`Tenants.workspace(team_id, client)` gives what a request from one workspace is handled
with: its Slack client (the token Bolt's authorize found for that workspace, so no request
ever uses another's), and a `Runner` built from its effective settings (models, sub-calls in
flight, runs at once, daily tokens, history window), sharing the process's store and pacer.
Its limiter and run slots are its own. The runs a workspace has in flight are tracked so an
uninstall can stop them.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from slack_sdk.web.async_client import AsyncWebClient

from bot.gather.context import ContextGatherer, UserDirectory
from bot.gather.scope_files import ScopeFiles
from bot.gather.uploads import Uploads
from bot.runs.budgets import BudgetBook
from bot.runs.runner import EngineConfig, Runner
from bot.runs.slots import RunSlots
from bot.slack import messages
from bot.slack.api import SlackPoster, make_web_client
from bot.storage._installations import InstallationStore
from bot.storage._tenants import TenantStore
from bot.workspaces.installs import OAuth
from bot.workspaces.settings import (
    WorkspaceSettings,
    WorkspaceSettingsBook,
)
from rlm import KeyedLimiter, LLMInterface, interface_from_spec

if TYPE_CHECKING:
    import aiohttp

    from bot.settings import Settings
    from bot.storage import Store

logger = logging.getLogger("bot.tenants")

# Clients kept per token (each with its cached identity and user names): bounded, oldest out.
MAX_CACHED_CLIENTS = 500


@dataclass
class Workspace:
    """What one request from `team_id` is handled with."""

    team_id: str
    settings: WorkspaceSettings
    poster: SlackPoster
    gatherer: ContextGatherer
    uploads: Uploads
    runner: Runner

    async def question_in(self, event: dict[str, Any]) -> str:
        """The event's text without the app's own mention, readable (names, not ids)."""
        bot = await self.poster.identity()
        raw = re.sub(rf"<@{re.escape(bot.user_id)}(?:\|[^>]*)?>", " ", event.get("text") or "")
        return (await self.gatherer.readable(raw)).strip()

    async def keep_attached(self, event: dict[str, Any]) -> None:
        """Keep the files a message brings, as uploads to its channel."""
        for file in event.get("files") or []:
            await self.uploads.ingest(
                team_id=self.team_id,
                channel_id=event["channel"],
                file_id=file["id"],
                user_id=event.get("user"),
                message_ts=event["ts"],
                thread_ts=event.get("thread_ts"),
            )


class ProcessParts(Protocol):
    """What every workspace shares with the process, or starts from: `bot.services.Services`
    provides it (declared here so tenancy does not import the services built over it)."""

    settings: Settings
    store: Store
    session: aiohttp.ClientSession
    poster: SlackPoster
    gatherer: ContextGatherer
    uploads: Uploads
    runner: Runner


@dataclass
class _Slack:
    poster: SlackPoster
    users: UserDirectory
    uploads: Uploads
    scope_files: ScopeFiles | None


@dataclass
class _Gate:
    limit: int
    value: Any


@dataclass
class Tenants:
    services: ProcessParts
    book: WorkspaceSettingsBook
    rows: TenantStore
    _slack: OrderedDict[str, _Slack] = field(default_factory=OrderedDict)
    _llms: dict[str, LLMInterface] = field(default_factory=dict)
    _limiters: dict[str, _Gate] = field(default_factory=dict)
    _slots: dict[str, _Gate] = field(default_factory=dict)
    _runs: dict[str, set[asyncio.Task[Any]]] = field(default_factory=dict)
    _enterprises: dict[str, str] = field(default_factory=dict)  # team -> its organisation
    _linked: set[tuple[str, str]] = field(default_factory=set)  # (team, org) pairs stored

    async def workspace(
        self,
        team_id: str,
        client: AsyncWebClient | None = None,
        enterprise_id: str | None = None,
    ) -> Workspace:
        s = self.services
        if enterprise_id and (team_id, enterprise_id) not in self._linked:
            # Kept so an organisation's uninstall finds its workspaces' runs and data.
            await self.rows.link_enterprise(team_id, enterprise_id)
            self._linked.add((team_id, enterprise_id))
            self._enterprises[team_id] = enterprise_id
        current = await self.book.effective(team_id)
        slack = self._slack_for(client)
        defaults = current == self.book.defaults
        if slack.poster is s.poster and defaults:
            return Workspace(team_id, current, s.poster, s.gatherer, s.uploads, s.runner)
        gatherer = ContextGatherer(
            client=slack.poster.client,
            store=s.store,
            users=slack.users,
            history_messages=current.history_messages,
            history_days=current.history_days,
            scope_files=slack.scope_files,
        )
        base = s.runner
        budget = base.budget
        daily_chosen = "daily_tokens" in current.chosen
        if current.daily_tokens != budget.budgets.daily_tokens or daily_chosen:
            budget = BudgetBook(
                store=s.store,
                budgets=replace(budget.budgets, daily_tokens=current.daily_tokens),
                daily_chosen=daily_chosen,
            )
        runner = Runner(
            engine=self._engine(base.engine, current),
            budget=budget,
            store=s.store,
            poster=slack.poster,
            gatherer=gatherer,
            pacer=base.pacer,
            limiters=self._gate(self._limiters, team_id, current.max_parallel_calls, base.limiters),
            slots=self._gate(self._slots, team_id, current.max_runs, base.slots),
            edit_interval=base.edit_interval,
            wait_notice=base.wait_notice,
            owner=base.owner,
            queue=base.queue,
            stop=base.stop,
            keeper=base.keeper,
        )
        # One table of runs in progress and one chat.update pace for the process, so a
        # Cancel click finds its run whichever request started it.
        runner.active, runner.edit_pacer, runner.streams = (
            base.active,
            base.edit_pacer,
            base.streams,
        )
        return Workspace(team_id, current, slack.poster, gatherer, slack.uploads, runner)

    def _slack_for(self, client: AsyncWebClient | None) -> _Slack:
        s = self.services
        token = client.token if client is not None else None
        if client is None or token == s.poster.client.token:
            return _Slack(s.poster, s.gatherer.users, s.uploads, s.gatherer.scope_files)
        assert token is not None
        cached = self._slack.get(token)
        if cached is not None:
            self._slack.move_to_end(token)
            return cached
        poster = SlackPoster(client)
        uploads = Uploads(
            client=client,
            poster=poster,
            store=s.store,
            session=s.session,
            api_url=s.settings.slack_api_url,
            max_file_bytes=s.settings.rlm_max_file_bytes,
        )
        files = ScopeFiles(
            client=client,
            store=s.store,
            uploads=uploads,
            max_files=s.settings.rlm_max_files_per_question,
            max_bytes=s.settings.rlm_max_file_bytes_per_question,
        )
        cached = _Slack(poster, UserDirectory(client), uploads, files)
        self._slack[token] = cached
        while len(self._slack) > MAX_CACHED_CLIENTS:
            self._slack.popitem(last=False)
        return cached

    def forget_tokens(self) -> None:
        """Drop cached clients (after an uninstall or a token refresh)."""
        self._slack.clear()

    def forget_links(self) -> None:
        """After a purge: workspaces' organisations are stored again as requests come."""
        self._linked.clear()

    def _gate(self, gates: dict[str, _Gate], team_id: str, limit: int, shared: Any) -> Any:
        """The workspace's limiter or run slots: the shared ones at the default limit, else
        its own; a changed limit takes effect for runs that start after the change."""
        if limit == getattr(shared, "max_in_flight", getattr(shared, "limit", None)):
            gates.pop(team_id, None)
            return shared
        gate = gates.get(team_id)
        if gate is None or gate.limit != limit:
            value = KeyedLimiter(limit) if isinstance(shared, KeyedLimiter) else RunSlots(limit)
            gate = gates[team_id] = _Gate(limit, value)
        return gate.value

    def _engine(self, base: EngineConfig, current: WorkspaceSettings) -> EngineConfig:
        if (current.root_model, current.sub_model) == (base.root_model, base.sub_model):
            return base
        return EngineConfig(
            root_llm=self._llm(current.root_model, base),
            sub_llm=self._llm(current.sub_model, base),
            root_model=current.root_model,
            sub_model=current.sub_model,
            prompt_mode=base.prompt_mode,
            sandbox_limits=base.sandbox_limits,
            provider_timeout=base.provider_timeout,
            max_map_chunks=base.max_map_chunks,
            max_prompt_bytes=base.max_prompt_bytes,
            provider_max_concurrency=base.provider_max_concurrency,
            prices=base.prices,
        )

    def _llm(self, spec: str, base: EngineConfig) -> LLMInterface:
        if spec == base.root_model:
            return base.root_llm
        if spec == base.sub_model:
            return base.sub_llm
        llm = self._llms.get(spec)
        if llm is None:
            settings = self.services.settings
            key, url = settings.provider_endpoint(spec)
            llm = self._llms[spec] = interface_from_spec(
                spec,
                api_key=key,
                base_url=url,
                timeout=settings.rlm_provider_timeout,
                max_retries=settings.rlm_provider_retries,
            )
        return llm

    # Runs in flight, by workspace and organisation, so an uninstall can stop them.

    def track(self, team_id: str, task: asyncio.Task[Any], enterprise_id: str | None) -> None:
        self._runs.setdefault(team_id, set()).add(task)
        if enterprise_id:
            self._enterprises[team_id] = enterprise_id
        task.add_done_callback(lambda t: self._runs.get(team_id, set()).discard(t))

    async def stop_runs(self, *, team_id: str | None, enterprise_id: str | None) -> int:
        """Cancel the runs of a workspace, or of every workspace of an organisation."""
        teams = {team_id} if team_id else set()
        if enterprise_id and not team_id:
            teams |= {t for t, e in self._enterprises.items() if e == enterprise_id}
            teams |= set(await self.rows.teams_of(enterprise_id))
        stopped = 0
        for team in teams:
            for task in list(self._runs.get(team, ())):
                if not task.done():
                    task.cancel()
                    stopped += 1
        return stopped

    async def client_for(self, team_id: str, oauth: OAuth | None) -> AsyncWebClient | None:
        """With OAuth: a client on `team_id`'s own bot token (None: it has none, or OAuth is
        off and the process's token serves it)."""
        if oauth is None:
            return None
        enterprise = self._enterprises.get(team_id) or await self.rows.enterprise_of(team_id)
        bot = await oauth.installations.async_find_bot(
            enterprise_id=enterprise, team_id=team_id
        ) or await oauth.installations.async_find_bot(
            enterprise_id=enterprise, team_id=None, is_enterprise_install=True
        )
        if bot is None or not bot.bot_token:
            return None
        return make_web_client(
            bot.bot_token, self.services.settings.slack_api_url, self.services.session
        )

    async def recover(self, installations: InstallationStore) -> int:
        """At start with OAuth on: mark runs a crash left unfinished as interrupted and tell
        their threads, each with its own workspace's token (skipped where it has none)."""
        runs = await self.services.store.mark_interrupted_runs()
        for run in runs:
            logger.info("run %d was left unfinished by a previous process: interrupted", run.id)
            if not run.thread_ts:
                continue
            enterprise = self._enterprises.get(run.team_id) or await self.rows.enterprise_of(
                run.team_id
            )
            bot = await installations.async_find_bot(
                enterprise_id=enterprise, team_id=run.team_id
            ) or await installations.async_find_bot(
                enterprise_id=enterprise, team_id=None, is_enterprise_install=True
            )
            if bot is None:
                continue
            client = make_web_client(
                bot.bot_token, self.services.settings.slack_api_url, self.services.session
            )
            await SlackPoster(client).try_post(
                run.channel_id, messages.INTERRUPTED, thread_ts=run.thread_ts
            )
        return len(runs)

    async def close(self) -> None:
        for slack in list(self._slack.values()):
            await slack.uploads.close()
        self._slack.clear()
        for llm in self._llms.values():
            await llm.aclose()
        self._llms.clear()
