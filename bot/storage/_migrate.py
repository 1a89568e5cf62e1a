"""Applying the Alembic migrations from async code: those in `migrations/` at the top of a
checkout, or in `bot/migrations/` inside an installed wheel.

Alembic is synchronous; handing it a connection through `AsyncConnection.run_sync` lets it
run on the caller's event loop (no second loop, no thread), inside one write transaction.

On SQLite, foreign keys are off while migrations run: altering a table there means copying
it and dropping the old one, and with foreign keys on, that DROP deletes (ON DELETE CASCADE)
every row referring to it: a `runs` rebuild emptied `iterations` and `context_sources`.
`PRAGMA foreign_keys` cannot change inside a transaction, so env.py turns it off on the
connection before its transaction begins, and checks every reference with
`PRAGMA foreign_key_check` before committing.

Migrations are serialised at two levels. Across processes: on SQLite the write transaction
(BEGIN IMMEDIATE) holds the file's lock, on PostgreSQL an advisory lock taken inside the
transaction (`lock_for_migration`, called by env.py) holds until it commits, so the next
process finds the schema done. Within one process: Alembic keeps the migration in progress
in module-level proxies (`alembic.context`, `alembic.op`), so two migrations interleaving on
one loop would overwrite each other's (`KeyError: 'config'`); one process-wide lock lets
only one run at a time.
"""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.storage._engine import for_writes

# In a checkout the migrations sit at its top (migrations/); a wheel carries them inside the
# package as bot/migrations (pyproject.toml maps one onto the other).
_PACKAGE_DIR = Path(__file__).resolve().parents[1]
MIGRATIONS_DIR = next(
    (d for d in (_PACKAGE_DIR / "migrations", _PACKAGE_DIR.parent / "migrations") if d.is_dir()),
    _PACKAGE_DIR.parent / "migrations",
)

# pg_advisory_xact_lock key: any fixed 64-bit number; this one spells "rlmslack".
ADVISORY_LOCK_KEY = 0x726C6D736C61636B

_UNKNOWN_REVISION = (
    "the database's schema is at a revision this version of rlm-slack does not know ({detail}); "
    "run the rlm-slack version that migrated it, or restore a backup"
)
_BROKEN_REFERENCES = (
    "the migration would leave {count} row(s) referring to rows that do not exist (first: "
    "{table} row {rowid} -> {parent}); nothing was changed"
)
_SQL_NEEDS_LIVE_TABLES = (
    "on SQLite the SQL of this step cannot be printed: altering a table there copies it, "
    "which needs the live table; run `rlm-bot migrate --to {revision}` (back up the file first)"
)
_IN_TRANSACTION = "SQLite migrations need a connection outside a transaction (foreign keys off)"
_MIGRATION_FAILED = "migrating the database failed ({detail}); fix that, then run `rlm-bot migrate`"

# Held while any migration of this process runs; a threading lock, so that migrations on
# other threads' loops wait too. Waiters poll rather than block, keeping their loop free.
_process_lock = threading.Lock()


class MigrationError(Exception):
    """A migration could not be applied; the message is one line saying what to do."""


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config for our migrations; with `connection`, env.py migrates through it."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def lock_for_migration(connection: Connection) -> None:
    """Wait for other processes' migrations of this database to commit (PostgreSQL; SQLite's
    write transaction already excludes them). Held until this transaction ends."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({ADVISORY_LOCK_KEY})")


def _pragma(connection: Connection, statement: str) -> None:
    # On the driver's connection: through SQLAlchemy it would begin a transaction first,
    # inside which SQLite ignores `PRAGMA foreign_keys`.
    cursor = connection.connection.cursor()
    try:
        cursor.execute(statement)
    finally:
        cursor.close()


@contextmanager
def foreign_keys_off(connection: Connection) -> Iterator[None]:
    """On SQLite, foreign keys off for the duration (see the module docstring); elsewhere
    nothing. `connection` must not be in a transaction yet."""
    if connection.dialect.name != "sqlite":
        yield
        return
    if connection.in_transaction():
        raise MigrationError(_IN_TRANSACTION)
    _pragma(connection, "PRAGMA foreign_keys = OFF")
    try:
        yield
    finally:
        if connection.in_transaction():  # a failure left it open: PRAGMA needs it closed
            connection.rollback()
        _pragma(connection, "PRAGMA foreign_keys = ON")


def check_foreign_keys(connection: Connection) -> None:
    """On SQLite, MigrationError if any row refers to a row that does not exist (the
    migration ran with foreign keys off); raised inside the transaction, it rolls back."""
    if connection.dialect.name != "sqlite":
        return
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        table, rowid, parent, _ = broken[0]
        raise MigrationError(
            _BROKEN_REFERENCES.format(count=len(broken), table=table, rowid=rowid, parent=parent)
        )


@asynccontextmanager
async def _one_at_a_time() -> AsyncIterator[None]:
    # A threading lock shared by every loop of the process: no asyncio primitive spans loops.
    while not _process_lock.acquire(blocking=False):  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    try:
        yield
    finally:
        _process_lock.release()


def _explain(exc: CommandError) -> MigrationError:
    detail = " ".join(str(exc).split())
    if "Can't locate revision" in detail or "No such revision" in detail:
        return MigrationError(_UNKNOWN_REVISION.format(detail=detail))
    return MigrationError(_MIGRATION_FAILED.format(detail=detail))


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Migrate the database behind `engine` up to `revision`; a no-op when already there.
    `MigrationError` (one line) if Alembic cannot."""
    # Not begun here: env.py begins the one write transaction, after turning SQLite's
    # foreign keys off on the connection.
    async with _one_at_a_time(), for_writes(engine).connect() as connection:
        try:
            await connection.run_sync(lambda sync: command.upgrade(alembic_config(sync), revision))
        except CommandError as exc:
            raise _explain(exc) from None


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    """Migrate the database behind `engine` down to `revision`, keeping the rows of every
    table that stays. `MigrationError` (one line) if Alembic cannot."""
    async with _one_at_a_time(), for_writes(engine).connect() as connection:
        try:
            await connection.run_sync(
                lambda sync: command.downgrade(alembic_config(sync), revision)
            )
        except CommandError as exc:
            raise _explain(exc) from None


def revisions() -> list[str]:
    """Every revision, oldest first."""
    script = ScriptDirectory.from_config(alembic_config())
    return [s.revision for s in reversed(list(script.walk_revisions()))]


def is_ancestor(older: str | None, newer: str | None) -> bool:
    """Whether `older` comes before `newer` (None: the empty database, before everything)."""
    if older is None:
        return True
    if newer is None:
        return False
    script = ScriptDirectory.from_config(alembic_config())
    return any(s.revision == older for s in script.iterate_revisions(newer, "base"))


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at (None: never migrated); creates nothing."""
    async with engine.connect() as connection:
        return await connection.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )


def migration_sql(database_url: str, start: str | None, revision: str = "head") -> str:
    """The SQL that migrates a database of `database_url`'s kind from `start` (None: empty)
    to `revision`, up or down, without connecting to it (Alembic's offline mode)."""
    config = alembic_config()
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    buffer = io.StringIO()
    config.output_buffer = buffer
    with _process_lock:
        try:
            if revision == "base" or (
                revision != "head" and start is not None and is_ancestor(revision, start)
            ):
                command.downgrade(config, f"{start}:{revision}", sql=True)
            elif start is None:
                command.upgrade(config, revision, sql=True)
            else:
                command.upgrade(config, f"{start}:{revision}", sql=True)
        except CommandError as exc:
            if "--sql mode" in str(exc):  # a batch table copy on SQLite reflects the table
                raise MigrationError(_SQL_NEEDS_LIVE_TABLES.format(revision=revision)) from None
            raise _explain(exc) from None
    return buffer.getvalue()


def upgrade_sql(database_url: str, revision: str = "head") -> str:
    """The SQL that migrates an empty database of `database_url`'s kind to `revision`."""
    return migration_sql(database_url, None, revision)
