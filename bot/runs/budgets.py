"""What a run may use, and what a workspace has used today.

Per-run budgets (iterations, sub-calls, tokens, wall time, dollars) come from settings; a
workspace's daily token and money budgets count the tokens and the cost of its runs created
since 00:00 UTC. A run's token (or money) cap is the smaller of its own budget and what is
left of its workspace's day. Money shows only to admins: a member is told a limit was
reached, never how much was spent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from bot.slack import admin_messages, messages
from bot.storage import Store


def day_start(now: datetime | None = None) -> datetime:
    """00:00 UTC of the current day: daily budgets reset then."""
    now = now or datetime.now(UTC)
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class Budgets:
    """The limits from settings; 0 means no limit for all but iterations."""

    max_iterations: int
    max_subcalls: int = 0
    max_run_tokens: int = 0
    max_run_seconds: float = 0.0
    daily_tokens: int = 0
    max_run_cost: float = 0.0  # US dollars
    daily_cost: float = 0.0  # US dollars


@dataclass(frozen=True)
class RunCaps:
    """What one run may use, as the engine takes it (None: no limit)."""

    max_iterations: int
    max_subcalls: int | None
    max_tokens: int | None
    max_seconds: float | None
    tokens_are_daily: bool = False  # the token cap is what was left of the workspace's day
    max_cost: float | None = None  # US dollars
    cost_is_daily: bool = False  # the money cap is what was left of the workspace's day


@dataclass(frozen=True)
class Usage:
    tokens_today: int
    runs_today: int
    in_flight: int
    cost_today: float = 0.0


class BudgetBook:
    """Reads a workspace's use from the store and turns budgets into caps and messages."""

    def __init__(self, *, store: Store, budgets: Budgets, daily_chosen: bool = False) -> None:
        """`daily_chosen`: the daily limit is one a workspace admin set with `/rlm config`."""
        self.store = store
        self.budgets = budgets
        self.daily_chosen = daily_chosen

    async def tokens_today(self, team_id: str) -> int:
        return await self.store.tokens_used_since(team_id, day_start())

    async def cost_today(self, team_id: str) -> float:
        return await self.store.cost_used_since(team_id, day_start())

    async def refusal(self, team_id: str) -> str | None:
        """Why a new run may not start (the day's tokens or money are used up), or None."""
        if self.budgets.daily_cost and await self.cost_today(team_id) >= self.budgets.daily_cost:
            return messages.DAILY_SPEND_USED
        limit = self.budgets.daily_tokens
        if not limit:
            return None
        used = await self.tokens_today(team_id)
        return messages.DAILY_LIMIT_REACHED if used >= limit else None

    async def caps(self, team_id: str) -> RunCaps | None:
        """The caps for a run starting now; None if the workspace's day is used up."""
        b = self.budgets
        tokens: int | None = b.max_run_tokens or None
        daily = False
        if b.daily_tokens:
            left = b.daily_tokens - await self.tokens_today(team_id)
            if left <= 0:
                return None
            if tokens is None or left < tokens:
                tokens, daily = left, True
        cost: float | None = b.max_run_cost or None
        cost_daily = False
        if b.daily_cost:
            left_cost = b.daily_cost - await self.cost_today(team_id)
            if left_cost <= 0:
                return None
            if cost is None or left_cost < cost:
                cost, cost_daily = left_cost, True
        return RunCaps(
            max_iterations=b.max_iterations,
            max_subcalls=b.max_subcalls or None,
            max_tokens=tokens,
            max_seconds=b.max_run_seconds or None,
            tokens_are_daily=daily,
            max_cost=cost,
            cost_is_daily=cost_daily,
        )

    def which(self, limit: str, caps: RunCaps) -> str:
        """The limit that really stopped a run: a token cap that was the day's remainder is
        the workspace's daily limit."""
        return "daily_tokens" if limit == "max_tokens" and caps.tokens_are_daily else limit

    def stopped_by(self, limit: str, caps: RunCaps) -> str:
        """The line that tells a thread which limit stopped its run (no numbers, no names)."""
        if limit == "max_cost":  # no amount: money is for admins
            daily = caps.cost_is_daily
            return messages.STOPPED_BY_DAILY_SPEND if daily else messages.STOPPED_BY_SPEND
        return messages.stopped_by(self.which(limit, caps))

    def admin_note(self, limit: str, caps: RunCaps | None = None) -> str:
        """What an admin who met `limit` is told alone: the amount and the setting."""
        limit = self.which(limit, caps) if caps is not None else limit
        amounts: dict[str, float | None] = {"daily_tokens": self.budgets.daily_tokens}
        if caps is not None:
            amounts.update(
                max_iterations=caps.max_iterations,
                max_subcalls=caps.max_subcalls,
                max_tokens=caps.max_tokens,
                max_seconds=caps.max_seconds,
            )
        return admin_messages.limit_note(
            limit, amounts.get(limit), chosen=limit == "daily_tokens" and self.daily_chosen
        )

    async def usage(self, team_id: str) -> Usage:
        since = day_start()
        return Usage(
            tokens_today=await self.store.tokens_used_since(team_id, since),
            runs_today=await self.store.count_runs(team_id, since=since),
            in_flight=await self.store.count_runs(team_id, statuses=("queued", "running")),
            cost_today=await self.store.cost_used_since(team_id, since),
        )

    async def usage_report(self, team_id: str, *, money: bool = False) -> str:
        """Today's use and the limits; with `money` (an admin asks), the spend too."""
        usage = await self.usage(team_id)
        b = self.budgets
        spend = (
            admin_messages.spend_report(
                cost_today=usage.cost_today, daily_cost=b.daily_cost, max_run_cost=b.max_run_cost
            )
            if money
            else ""
        )
        return (
            admin_messages.usage_report(
                tokens_today=usage.tokens_today,
                daily_tokens=b.daily_tokens,
                runs_today=usage.runs_today,
                in_flight=usage.in_flight,
                max_iterations=b.max_iterations,
                max_subcalls=b.max_subcalls,
                max_run_tokens=b.max_run_tokens,
                max_run_seconds=b.max_run_seconds,
            )
            + spend
        )
