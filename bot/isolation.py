"""The REPL sandbox the app's runs use, chosen from settings and proved at start.

`check_sandbox` starts one REPL worker exactly as runs will, so a machine where isolation
cannot work is found before the first question, not during it: with RLM_REQUIRE_SANDBOX the
app refuses to start; without it, it starts and says loudly that code runs unisolated.
"""

from __future__ import annotations

import logging
import os

from sqlalchemy.engine import make_url

from rlm import REPLError, SandboxLimits
from rlm.repl import REPLSession

logger = logging.getLogger("bot.sandbox")

CHOSEN = "REPL sandbox: generated code runs isolated with %s (RLM_SANDBOX=%s)."
UNISOLATED = (
    "REPL sandbox: NONE. Generated code runs without isolation: it can use the network and "
    "read every file this process can (RLM_SANDBOX=%s). Install bubblewrap, or set "
    "RLM_REQUIRE_SANDBOX=true to refuse to start without a sandbox."
)
REFUSED = "{reason} (RLM_SANDBOX={choice}, RLM_REQUIRE_SANDBOX={required})"


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
    return method
