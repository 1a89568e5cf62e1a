"""Applying the Alembic migrations from async code: those in `migrations/` at the top of a
checkout, or in `bot/migrations/` inside an installed wheel.

Alembic is synchronous; handing it a connection through `AsyncConnection.run_sync` lets it
run on the caller's event loop (no second loop, no thread), inside one write transaction.

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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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
    async with _one_at_a_time(), for_writes(engine).begin() as connection:
        try:
            await connection.run_sync(lambda sync: command.upgrade(alembic_config(sync), revision))
        except CommandError as exc:
            raise _explain(exc) from None


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    async with _one_at_a_time(), for_writes(engine).begin() as connection:
        await connection.run_sync(lambda sync: command.downgrade(alembic_config(sync), revision))


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at (None: never migrated); creates nothing."""
    async with engine.connect() as connection:
        return await connection.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )


def upgrade_sql(database_url: str, revision: str = "head") -> str:
    """The SQL that migrates an empty database of `database_url`'s kind to `revision`,
    without connecting to it (Alembic's offline mode)."""
    config = alembic_config()
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    buffer = io.StringIO()
    config.output_buffer = buffer
    with _process_lock:
        try:
            command.upgrade(config, revision, sql=True)
        except CommandError as exc:
            raise _explain(exc) from None
    return buffer.getvalue()
