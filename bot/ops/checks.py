"""The probes behind `rlm-bot check`: each tries one thing the app needs, as the app would,
and returns one line saying what holds, or raises with one line saying what to fix.

A probe changes nothing: the database is read, not migrated (a SQLite file not there yet is
not created), Redis is pinged, stored tokens are decrypted in memory and dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.settings import Settings

MODEL_PROBE = "Reply with the single word OK."
CHECK_TIMEOUT_SECONDS = 30.0
REDIS_TIMEOUT_SECONDS = 5.0

SQLITE_NOT_YET = "no database file yet; `rlm-bot` or `rlm-bot migrate` creates it"
SCHEMA_NEWEST = "{url}: schema at {revision} (newest)"
SCHEMA_EMPTY = (
    "{url}: empty (no schema yet; newest is {head}); `rlm-bot migrate` or starting the app "
    "creates it"
)
SCHEMA_BEHIND = "{url}: schema at {revision}, behind the newest {head}: run `rlm-bot migrate`"
SCHEMA_AHEAD = (
    "{url}: schema at {revision}, which this version of rlm-slack does not know (newest here "
    "is {head}): run the version that migrated it, or `rlm-bot migrate --to {head}` with it"
)
REDIS_OK = "{url} answered PING"
REDIS_NO_PACKAGE = (
    "REDIS_URL is set but the redis package is not installed: pip install 'rlm-slack[redis]'"
)
REDIS_UNREACHABLE = "{url} could not be reached ({detail}); check REDIS_URL and that Redis runs"
SLACK_REFUSED = (
    "auth.test refused SLACK_BOT_TOKEN ({error}): copy the Bot User OAuth Token from OAuth & "
    "Permissions and reinstall the app if it was revoked"
)
SLACK_UNREACHABLE = "cannot reach {url} ({detail}); check SLACK_API_URL and the network"
NO_INSTALL_TABLES = (
    "none stored yet (the schema has no installation tables before `rlm-bot migrate`)"
)
INSTALLS_OK = (
    "{workspaces} workspace(s) installed; RLM_ENCRYPTION_KEY decrypts all {total} stored token(s)"
)
INSTALLS_OLDER_KEY = (
    "; {n} written with an older key (the app rewrites them with the newest at start; "
    "then the old key can go)"
)
SANDBOX_REFUSED = "the app would refuse to start: {reason}"


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.name}: {self.detail}"


class CheckFailed(Exception):
    """A probe's one-line failure."""


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:299] + "…"


async def run_probe(name: str, probe: Callable[[], Awaitable[str]]) -> CheckResult:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            return CheckResult(name, True, await probe())
    except TimeoutError:
        return CheckResult(name, False, f"no answer in {CHECK_TIMEOUT_SECONDS:.0f} s")
    except Exception as exc:
        return CheckResult(name, False, one_line(exc))


def probes(settings: Settings) -> list[tuple[str, Callable[[], Awaitable[str]]]]:
    """(name, probe) for everything `settings` asks of this machine, in the order shown."""
    found: list[tuple[str, Callable[[], Awaitable[str]]]] = [
        ("database", lambda: check_database(settings))
    ]
    if settings.redis_url:
        found.append(("redis", lambda: check_redis(settings)))
    if settings.slack_bot_token:  # with OAuth alone, tokens come per workspace
        found.append(("slack", lambda: check_slack(settings)))
    if settings.oauth_enabled:
        found.append(("installations", lambda: check_installations(settings)))
    for spec in dict.fromkeys((settings.rlm_root_model, settings.rlm_sub_model)):
        found.append((f"model {spec}", lambda spec=spec: check_model(settings, spec)))  # type: ignore[misc]
    found.append(("sandbox", lambda: check_isolation(settings)))
    return found


async def check_database(settings: Settings) -> str:
    from bot.storage._migrate import is_ancestor
    from bot.storage._operator import inspect_database

    state = await inspect_database(settings.database_url)
    if not state.exists:
        return f"{state.shown_url}: {SQLITE_NOT_YET}"
    values = {"url": state.shown_url, "revision": state.revision, "head": state.head}
    if state.current:
        return SCHEMA_NEWEST.format(**values)
    if state.revision is None:
        return SCHEMA_EMPTY.format(**values)
    try:
        behind = is_ancestor(state.revision, state.head)
    except Exception:  # a revision our scripts do not have
        behind = False
    raise CheckFailed((SCHEMA_BEHIND if behind else SCHEMA_AHEAD).format(**values))


async def check_redis(settings: Settings) -> str:
    from bot.ops.replicas import _shown

    assert settings.redis_url is not None
    shown = _shown(settings.redis_url)
    try:
        import redis.asyncio as aioredis
        from redis.exceptions import RedisError
    except ImportError:
        raise CheckFailed(REDIS_NO_PACKAGE) from None
    client = aioredis.from_url(  # type: ignore[no-untyped-call]
        settings.redis_url,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
    )
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        detail = one_line(exc).replace(settings.redis_url, shown)
        raise CheckFailed(REDIS_UNREACHABLE.format(url=shown, detail=detail)) from None
    finally:
        await client.aclose()
    return REDIS_OK.format(url=shown)


async def check_slack(settings: Settings) -> str:
    import aiohttp
    from slack_sdk.errors import SlackApiError

    from bot.slack.api import make_web_client

    async with aiohttp.ClientSession() as session:
        client = make_web_client(settings.slack_bot_token, settings.slack_api_url, session)
        try:
            reply = await client.auth_test()
        except SlackApiError as exc:
            error = exc.response.get("error") if exc.response is not None else None
            raise CheckFailed(SLACK_REFUSED.format(error=error)) from None
        except (aiohttp.ClientError, OSError) as exc:
            detail = one_line(exc)
            raise CheckFailed(
                SLACK_UNREACHABLE.format(url=settings.slack_api_url, detail=detail)
            ) from None
    team, team_id, user = reply.get("team"), reply.get("team_id"), reply.get("user")
    return f"auth.test ok: team {team} ({team_id}), bot {user}"


async def check_installations(settings: Settings) -> str:
    """The installation store can be read and RLM_ENCRYPTION_KEY decrypts every token in it."""
    from sqlalchemy import inspect

    from bot.storage import Store
    from bot.storage._crypto import TokenCipher
    from bot.storage._engine import create_engine
    from bot.storage._installations import InstallationStore
    from bot.storage._operator import inspect_database

    assert settings.slack_client_id and settings.rlm_encryption_key
    if not (await inspect_database(settings.database_url)).exists:
        return NO_INSTALL_TABLES
    engine = create_engine(settings.database_url)
    try:
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
        if "slack_bots" not in tables:
            return NO_INSTALL_TABLES
        store = InstallationStore(
            store=Store(engine),
            client_id=settings.slack_client_id,
            cipher=TokenCipher(settings.rlm_encryption_key),
        )
        keys = await store.check_key()
    finally:
        await engine.dispose()
    if not keys.ok:
        raise CheckFailed(keys.problem())
    detail = INSTALLS_OK.format(workspaces=keys.workspaces, total=keys.total)
    return detail + (INSTALLS_OLDER_KEY.format(n=keys.older_key) if keys.older_key else "")


async def check_model(settings: Settings, spec: str) -> str:
    from rlm import interface_from_spec

    api_key, base_url = settings.provider_endpoint(spec)
    llm = interface_from_spec(
        spec,
        api_key=api_key,
        base_url=base_url,
        timeout=min(settings.rlm_provider_timeout, CHECK_TIMEOUT_SECONDS),
        max_retries=0,
    )
    try:
        await llm.query_async(MODEL_PROBE)
    finally:
        await llm.aclose()
    return f"answered at {base_url or 'the provider default endpoint'}"


async def check_isolation(settings: Settings) -> str:
    """Start one REPL worker as runs will (what the app does at start), then say which of the
    sandbox's layers hold on this machine."""
    from bot.ops.isolation import SandboxUnavailable, check_sandbox, sandbox_limits
    from rlm.repl import sandbox_limits_report

    limits = sandbox_limits(
        settings.rlm_sandbox, settings.rlm_require_sandbox, database_url=settings.database_url
    )
    try:
        await check_sandbox(limits)
    except SandboxUnavailable as exc:
        raise CheckFailed(SANDBOX_REFUSED.format(reason=exc)) from None
    report = await asyncio.to_thread(sandbox_limits_report, limits)
    return report.text()
