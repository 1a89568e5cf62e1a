"""The REPL sandbox the app's runs use, chosen from settings and proved at start.

`check_sandbox` starts one REPL worker exactly as runs will, so a machine where isolation
cannot work is found before the first question, not during it: with RLM_REQUIRE_SANDBOX the
app refuses to start (also when memory cannot be bounded for the whole sandbox); without it,
it starts and says loudly that code runs unisolated. Which limits hold is logged at start and
shown to workspace admins in `/rlm usage`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING

from slack_sdk.errors import SlackApiError
from sqlalchemy.engine import make_url

from bot.workspaces.config_command import is_admin
from rlm import REPLError, SandboxLimits
from rlm.repl import REPLSession, sandbox_limits_report

if TYPE_CHECKING:
    from slack_sdk.web.async_client import AsyncWebClient

logger = logging.getLogger("bot.sandbox")
limits_logger = logging.getLogger("bot.sandbox.limits")

CHOSEN = "REPL sandbox: generated code runs isolated with %s (RLM_SANDBOX=%s)."
UNISOLATED = (
    "REPL sandbox: NONE. Generated code runs without isolation: it can use the network and "
    "read every file this process can (RLM_SANDBOX=%s). Install bubblewrap, or set "
    "RLM_REQUIRE_SANDBOX=true to refuse to start without a sandbox."
)
REFUSED = "{reason} (RLM_SANDBOX={choice}, RLM_REQUIRE_SANDBOX={required})"
LIMITS = "REPL sandbox limits: %s."
MEMORY_UNBOUNDED = (
    "The REPL sandbox cannot bound memory for the whole sandbox on this machine (no writable "
    "memory cgroup: run as root or delegate one), only per process"
)
USAGE_HEADER = "\n*REPL sandbox* (shown to admins)\n"
_ADMIN_CHECK_SECONDS = 1.5  # `/rlm usage` answers within Slack's 3 s either way


class SandboxUnavailable(Exception):
    """The configured sandbox cannot run here; the message is one line for the operator."""


def sandbox_limits(
    choice: str, required: bool, *, database_url: str = "", packages: tuple[str, ...] = ()
) -> SandboxLimits:
    """The sandbox as configured: `packages` are the distributions generated code may import
    (RLM_SANDBOX_PACKAGES). The worker's filesystem is an allowlist, so the database (passed
    on as `private_paths`, kept for compatibility) is out of its view wherever it lies."""
    return SandboxLimits(
        isolation=choice,
        require_isolation=required,
        private_paths=_database_paths(database_url),
        packages=packages,
    )


def _database_paths(database_url: str) -> tuple[str, ...]:
    if not database_url.startswith("sqlite"):
        return ()
    database = make_url(database_url).database
    if not database or database == ":memory:":
        return ()
    return (os.path.abspath(database),)


async def _no_query(prompt: str) -> str:
    raise RuntimeError("the start-up check makes no sub-calls")


async def _no_map(template: str, chunks: list[str]) -> list[str]:
    raise RuntimeError("the start-up check makes no sub-calls")


async def check_sandbox(limits: SandboxLimits) -> str:
    """Start and stop one worker under `limits`; returns the method it used ("bwrap",
    "unshare" or "none"), or raises SandboxUnavailable."""
    session = REPLSession("", llm_query=_no_query, parallel_query=_no_map, limits=limits)
    try:
        await session.start()
        method = session.isolation or "none"
    except REPLError as exc:
        reason = " ".join(str(exc).split()).rstrip(".")
        required = "true" if limits.require_isolation else "false"
        raise SandboxUnavailable(
            REFUSED.format(reason=reason, choice=limits.isolation, required=required) + "."
        ) from None
    finally:
        await session.close()
    if method == "none":
        logger.warning(UNISOLATED, limits.isolation)
    else:
        logger.info(CHOSEN, method, limits.isolation)
    report = await asyncio.to_thread(sandbox_limits_report, limits)
    limits_logger.info(LIMITS, report.text())
    if limits.require_isolation and not report.memory_bounded:
        raise SandboxUnavailable(
            REFUSED.format(reason=MEMORY_UNBOUNDED, choice=limits.isolation, required="true") + "."
        )
    return method


async def sandbox_report_for(client: AsyncWebClient, user_id: str, limits: SandboxLimits) -> str:
    """Which sandbox limits hold, for `/rlm usage` when a workspace admin asks; "" for anyone
    else, or when Slack cannot say in time who is an admin."""
    try:
        async with asyncio.timeout(_ADMIN_CHECK_SECONDS):
            admin = await is_admin(client, user_id)
    except (SlackApiError, TimeoutError, KeyError, TypeError):
        return ""
    if not admin:
        return ""
    report = await asyncio.to_thread(sandbox_limits_report, limits)
    return USAGE_HEADER + "\n".join(f"• {line}" for line in report.lines())
