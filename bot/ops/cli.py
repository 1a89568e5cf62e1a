"""`rlm-bot migrate` and `rlm-bot check`: the operator's commands beside serving.

`migrate` brings the database to the newest schema, or with `--to REV` to that revision, up or
down (keeping the rows of every table that stays); with `--sql` it prints the SQL that would,
from the database's current revision (or `--from REV`, without connecting). `check` tries
each thing the app needs (settings, the database and its schema, Redis when set, Slack's
`auth.test` when there is a bot token, the OAuth installation store and its encryption key,
every configured model, the REPL sandbox) and prints one line for each; its exit status is
non-zero when any failed. Neither prints a traceback: a failure is one line saying what to fix.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from bot.ops.checks import CheckResult, probes, run_probe
from bot.settings import DatabaseSettings, Settings, SettingsError

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_CANNOT_RUN = 2  # as `rlm-bot` itself exits when it cannot start

_MIGRATED = "rlm-bot: database {url} migrated from {before} to {after}."
_MIGRATED_DOWN = "rlm-bot: database {url} migrated down from {before} to {after}."
_ALREADY = "rlm-bot: database {url} is already at {after}; nothing to do."
_NO_SQL = "rlm-bot: database {url} is already at {after}; no SQL to print."
_UNKNOWN_TARGET = "there is no revision {revision}; the revisions are {known} (or head)"
_SQL_NEEDS_DATABASE = (
    "{detail} `--sql` reads the database's revision to start from; give `--from REV` (`base` "
    "for an empty database) to print without connecting"
)
_EMPTY = "an empty database"
_NOT_TO_BASE = (
    "`--to base` would drop every table and its rows; to start afresh, drop the database "
    "(or delete the SQLite file) yourself, after a backup"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlm-bot",
        description="Serve the rlm Slack app (no command), or run an operator's command.",
    )
    commands = parser.add_subparsers(dest="command", metavar="{migrate,check}")
    migrate = commands.add_parser(
        "migrate",
        help="migrate DATABASE_URL to the newest schema (the app also does at start), or to "
        "--to REV, up or down",
    )
    migrate.add_argument(
        "--to",
        metavar="REV",
        default="head",
        help="the revision to migrate to, up or down (default: head, the newest)",
    )
    migrate.add_argument(
        "--sql",
        action="store_true",
        help="print the SQL instead, from the database's current revision",
    )
    migrate.add_argument(
        "--from",
        dest="start",
        metavar="REV",
        help="with --sql: start from REV (base: an empty database) without connecting",
    )
    commands.add_parser(
        "check",
        help="check settings, database, Redis, Slack, installations, each model and the "
        "sandbox; one line each",
    )
    return parser


def run_command(args: argparse.Namespace) -> int:
    """Run an operator's command; its exit status."""
    if args.command == "migrate":
        return asyncio.run(migrate(sql=args.sql, to=args.to, start=args.start))
    return asyncio.run(check())


def _fail(message: str) -> int:
    print(f"rlm-bot: {message}", file=sys.stderr)
    return EXIT_CANNOT_RUN


def _known(revision: str, *, base: bool = False) -> str | None:
    """None when `revision` names one we have, else the one-line complaint."""
    from bot.storage._migrate import revisions

    known = revisions()
    if revision == "head" or revision in known or (base and revision == "base"):
        return None
    shown = ", ".join(known)
    return _UNKNOWN_TARGET.format(revision=revision, known=shown)


async def migrate(*, sql: bool = False, to: str = "head", start: str | None = None) -> int:
    from sqlalchemy.engine import make_url

    from bot.storage._operator import migrate_database

    try:
        url = DatabaseSettings.from_env().database_url
    except SettingsError as exc:
        return _fail(str(exc))
    problem = _known(to, base=True) or (start and _known(start, base=True))
    if problem:
        return _fail(problem)
    if sql:
        return await _print_sql(url, to, start)
    if to == "base":
        return _fail(_NOT_TO_BASE)
    try:
        before, after = await migrate_database(url, to)
    except ValueError as exc:
        return _fail(str(exc))
    from bot.storage._migrate import is_ancestor

    shown = make_url(url).render_as_string(hide_password=True)
    if before == after:
        template = _ALREADY
    elif is_ancestor(after, before):
        template = _MIGRATED_DOWN
    else:
        template = _MIGRATED
    print(template.format(url=shown, before=before or _EMPTY, after=after or _EMPTY))
    return EXIT_OK


async def _print_sql(url: str, to: str, start: str | None) -> int:
    from bot.storage._migrate import MigrationError, head_revision, migration_sql
    from bot.storage._operator import inspect_database

    if start is None:
        try:
            state = await inspect_database(url)
        except ValueError as exc:
            return _fail(_SQL_NEEDS_DATABASE.format(detail=exc))
        current, shown = state.revision, state.shown_url
    else:
        from sqlalchemy.engine import make_url

        current = None if start == "base" else start
        shown = make_url(url).render_as_string(hide_password=True)
    target = head_revision() if to == "head" else None if to == "base" else to
    if current == target:
        print(_NO_SQL.format(url=shown, after=current or _EMPTY), file=sys.stderr)
        return EXIT_OK
    try:
        print(migration_sql(url, current, to), end="")
    except (MigrationError, ValueError) as exc:
        return _fail(str(exc))
    return EXIT_OK


async def check(settings: Settings | None = None) -> int:
    """Print one line per check; EXIT_CHECK_FAILED if any failed."""
    if settings is None:
        try:
            settings = Settings.from_env()
        except SettingsError as exc:
            print(CheckResult("settings", False, str(exc)).line())
            return EXIT_CHECK_FAILED
    mode = "Socket Mode" if settings.socket_mode else f"HTTP mode on port {settings.port}"
    if settings.oauth_enabled:
        mode += ", OAuth installs" + ("" if settings.slack_bot_token else " (no SLACK_BOT_TOKEN)")
    results = [CheckResult("settings", True, mode)]
    print(results[-1].line(), flush=True)
    for name, probe in probes(settings):
        results.append(await run_probe(name, probe))
        print(results[-1].line(), flush=True)
    return EXIT_OK if all(r.ok for r in results) else EXIT_CHECK_FAILED
