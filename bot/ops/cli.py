"""`rlm-bot migrate` and `rlm-bot check`: the operator's commands beside serving.

`migrate` brings the database to the newest schema (or, with `--sql`, prints the SQL that
would, without connecting). `check` tries each thing the app needs (settings, the database,
Slack's `auth.test`, every configured model) and prints one line for each; its exit status is
non-zero when any failed. Neither prints a traceback: a failure is one line saying what to fix.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.settings import DatabaseSettings, Settings, SettingsError

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_CANNOT_RUN = 2  # as `rlm-bot` itself exits when it cannot start
CHECK_TIMEOUT_SECONDS = 30.0
MODEL_PROBE = "Reply with the single word OK."

_MIGRATED = "rlm-bot: database {url} migrated from {before} to {after}."
_ALREADY = "rlm-bot: database {url} is already at {after}; nothing to do."
_SQLITE_NOT_YET = "no database file yet; `rlm-bot` or `rlm-bot migrate` creates it"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlm-bot",
        description="Serve the rlm Slack app (no command), or run an operator's command.",
    )
    commands = parser.add_subparsers(dest="command", metavar="{migrate,check}")
    migrate = commands.add_parser(
        "migrate", help="migrate DATABASE_URL to the newest schema (the app also does at start)"
    )
    migrate.add_argument(
        "--sql", action="store_true", help="print the SQL instead, without connecting"
    )
    commands.add_parser(
        "check", help="check settings, database, Slack and each model; one line each"
    )
    return parser


def run_command(args: argparse.Namespace) -> int:
    """Run an operator's command; its exit status."""
    if args.command == "migrate":
        return asyncio.run(migrate(sql=args.sql))
    return asyncio.run(check())


def _fail(message: str) -> int:
    print(f"rlm-bot: {message}", file=sys.stderr)
    return EXIT_CANNOT_RUN


async def migrate(*, sql: bool = False) -> int:
    from bot.storage._migrate import MigrationError, upgrade_sql
    from bot.storage._operator import migrate_database

    try:
        url = DatabaseSettings.from_env().database_url
    except SettingsError as exc:
        return _fail(str(exc))
    if sql:
        try:
            print(upgrade_sql(url), end="")
        except (MigrationError, ValueError) as exc:
            return _fail(str(exc))
        return EXIT_OK
    try:
        before, after = await migrate_database(url)
    except ValueError as exc:
        return _fail(str(exc))
    from sqlalchemy.engine import make_url

    shown = make_url(url).render_as_string(hide_password=True)
    template = _ALREADY if before == after else _MIGRATED
    print(template.format(url=shown, before=before or "an empty database", after=after))
    return EXIT_OK


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.name}: {self.detail}"


async def check(settings: Settings | None = None) -> int:
    """Print one line per check; EXIT_CHECK_FAILED if any failed."""
    results: list[CheckResult] = []
    if settings is None:
        try:
            settings = Settings.from_env()
        except SettingsError as exc:
            print(CheckResult("settings", False, str(exc)).line())
            return EXIT_CHECK_FAILED
    mode = "Socket Mode" if settings.socket_mode else f"HTTP mode on port {settings.port}"
    results.append(CheckResult("settings", True, mode))
    print(results[-1].line())
    probes: list[tuple[str, Callable[[], Awaitable[str]]]] = [
        ("database", lambda: _check_database(settings)),
        ("slack", lambda: _check_slack(settings)),
    ]
    for spec in dict.fromkeys((settings.rlm_root_model, settings.rlm_sub_model)):
        probes.append((f"model {spec}", lambda spec=spec: _check_model(settings, spec)))  # type: ignore[misc]
    for name, probe in probes:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
                detail = await probe()
            results.append(CheckResult(name, True, detail))
        except TimeoutError:
            results.append(CheckResult(name, False, f"no answer in {CHECK_TIMEOUT_SECONDS:.0f} s"))
        except Exception as exc:
            results.append(CheckResult(name, False, _one_line(exc)))
        print(results[-1].line(), flush=True)
    return EXIT_OK if all(r.ok for r in results) else EXIT_CHECK_FAILED


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:299] + "…"


async def _check_database(settings: Settings) -> str:
    from bot.storage._operator import inspect_database

    state = await inspect_database(settings.database_url)
    if not state.exists:
        return f"{state.shown_url}: {_SQLITE_NOT_YET}"
    if state.current:
        return f"{state.shown_url}: schema at {state.revision} (newest)"
    behind = state.revision or "empty"
    return (
        f"{state.shown_url}: schema at {behind}, newest is {state.head}; "
        "`rlm-bot migrate` (or starting the app) applies it"
    )


async def _check_slack(settings: Settings) -> str:
    import aiohttp
    from slack_sdk.errors import SlackApiError

    from bot.slack.api import make_web_client

    async with aiohttp.ClientSession() as session:
        client = make_web_client(settings.slack_bot_token, settings.slack_api_url, session)
        try:
            reply = await client.auth_test()
        except SlackApiError as exc:
            error = exc.response.get("error") if exc.response is not None else None
            raise RuntimeError(
                f"auth.test refused SLACK_BOT_TOKEN ({error}): copy the Bot User OAuth Token "
                "from OAuth & Permissions and reinstall the app if it was revoked"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise RuntimeError(
                f"cannot reach {settings.slack_api_url} ({_one_line(exc)}); check SLACK_API_URL "
                "and the network"
            ) from None
    team, team_id, user = reply.get("team"), reply.get("team_id"), reply.get("user")
    return f"auth.test ok: team {team} ({team_id}), bot {user}"


async def _check_model(settings: Settings, spec: str) -> str:
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
