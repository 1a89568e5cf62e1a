"""App Home and `/rlm history`: a user's recent runs and today's usage, a channel's recent
runs, and for admins the configuration problems the store holds.

A user sees only their own runs on App Home (runs asked in channels they may have left, or in
their assistant pane, are theirs to see); `/rlm history` lists the runs of the channel it is
typed in, to the one who typed it. Links are Slack permalinks, cached.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.runs.budgets import BudgetBook
from bot.slack import surface_messages as text
from bot.storage import RunRecord, Store

logger = logging.getLogger("bot.home")

RECENT_RUNS = 10
MAX_PROBLEMS = 10
PERMALINK_CACHE = 5000
_SLACK_FAILURES = (SlackApiError, aiohttp.ClientError, TimeoutError)


class Home:
    def __init__(self, *, client: AsyncWebClient, store: Store, budget: BudgetBook) -> None:
        self.client = client
        self.store = store
        self.budget = budget
        self._links: dict[tuple[str, str], str] = {}

    async def publish(self, team_id: str, user_id: str) -> None:
        """Build and publish `user_id`'s App Home."""
        admin = await self.is_admin(user_id)
        usage = await self.budget.usage_report(team_id, money=admin)
        runs = await self.store.recent_runs(team_id, user_id=user_id, limit=RECENT_RUNS)
        lines = [await self._line(run, with_user=False) for run in runs]
        problems = None
        if admin:
            problems = [
                text.problem_line(detail=p.detail, fix=p.fix, count=p.count, last_seen=p.last_seen)
                for p in await self.store.problems_for_workspace(team_id, limit=MAX_PROBLEMS)
            ]
        view = home_view(usage=usage, runs=lines, problems=problems)
        await self.client.views_publish(user_id=user_id, view=view)

    async def history(self, team_id: str, channel_id: str) -> str:
        """The channel's recent runs, as the text of an ephemeral message."""
        runs = await self.store.recent_runs(team_id, channel_id=channel_id, limit=RECENT_RUNS)
        if not runs:
            return text.HISTORY_EMPTY
        lines = [await self._line(run, with_user=True) for run in runs]
        return "\n".join([text.history_title(len(runs)), *lines])

    async def is_admin(self, user_id: str) -> bool:
        try:
            user = (await self.client.users_info(user=user_id))["user"]
        except _SLACK_FAILURES as exc:
            logger.info("users.info %s failed: %s", user_id, exc)
            return False  # unknown is not an admin
        return bool(user.get("is_admin") or user.get("is_owner") or user.get("is_primary_owner"))

    async def permalink(self, channel_id: str, ts: str) -> str | None:
        key = (channel_id, ts)
        if key in self._links:
            return self._links[key]
        try:
            reply = await self.client.chat_getPermalink(channel=channel_id, message_ts=ts)
        except _SLACK_FAILURES as exc:
            logger.info("no permalink for %s/%s: %s", channel_id, ts, exc)
            return None
        if len(self._links) >= PERMALINK_CACHE:
            self._links.clear()
        self._links[key] = link = str(reply["permalink"])
        return link

    async def _line(self, run: RunRecord, *, with_user: bool) -> str:
        link = await self.permalink(run.channel_id, run.thread_ts) if run.thread_ts else None
        place = text.DM_PLACE if run.channel_id.startswith("D") else f"<#{run.channel_id}>"
        return text.run_line(
            question=run.question,
            link=link,
            status=run.status,
            place=place,
            user_id=run.user_id if with_user else None,
            when=run.created_at,
        )


def home_view(*, usage: str, runs: list[str], problems: list[str] | None) -> dict[str, Any]:
    """The App Home view: intro, today's usage, the user's runs, and problems for admins."""
    blocks: list[dict[str, Any]] = [
        _header(text.HOME_TITLE),
        _section(text.HOME_INTRO),
        {"type": "divider"},
        _header(text.HOME_USAGE_TITLE),
        _section(usage),
        {"type": "divider"},
        _header(text.HOME_RUNS_TITLE),
    ]
    blocks += [_section(line) for line in runs] or [_section(text.HOME_NO_RUNS)]
    if problems is not None:
        blocks += [{"type": "divider"}, _header(text.HOME_PROBLEMS_TITLE)]
        blocks += [_section(p) for p in problems] or [_section(text.HOME_NO_PROBLEMS)]
    return {"type": "home", "blocks": blocks}


def _header(title: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": title}}


def _section(mrkdwn: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text.clip_block(mrkdwn)}}
