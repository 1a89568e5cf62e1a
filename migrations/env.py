"""Alembic environment: migrates through a connection handed over by `Store.open`, or, from
the `alembic` command line, through its own async engine for the configured database URL.

On SQLite, foreign keys are off while migrations run and every reference is checked before
the transaction commits (see bot/storage/_migrate.py: a table rebuild would otherwise
cascade-delete the rows referring to it).

The URL for the command line comes from `-x url=...`, else `sqlalchemy.url` in alembic.ini,
else DATABASE_URL from the environment or a `.env` file, else the app's default.
"""

from __future__ import annotations

import asyncio
import os
from logging.config import fileConfig
from typing import Any

from alembic import context
from alembic.autogenerate.api import AutogenContext
from dotenv import dotenv_values
from sqlalchemy.engine import Connection

from bot.storage._engine import DEFAULT_DATABASE_URL, create_engine, for_writes
from bot.storage._migrate import check_foreign_keys, foreign_keys_off, lock_for_migration
from bot.storage._models import Base, BoundedString, StorableText, UTCDateTime

config = context.config
target_metadata = Base.metadata

# Only the command line has an ini file; when the app migrates, its own logging stays as is.
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _database_url() -> str:
    return (
        context.get_x_argument(as_dictionary=True).get("url")
        or config.get_main_option("sqlalchemy.url")
        or os.environ.get("DATABASE_URL")
        or dotenv_values(".env").get("DATABASE_URL")
        or DEFAULT_DATABASE_URL
    )


def _render_item(kind: str, obj: Any, autogen_context: AutogenContext) -> str | bool:
    # Generated migrations should use plain SQLAlchemy types, never import our models.
    if kind == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    if kind == "type" and isinstance(obj, BoundedString):
        return f"sa.String({obj.length})"
    if kind == "type" and isinstance(obj, StorableText):
        return "sa.Text()"
    return False


def _configure(**options: Any) -> None:
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        render_item=_render_item,
        **options,
    )


def run_migrations_offline() -> None:
    url = _database_url()
    sqlite = url.startswith("sqlite")
    _configure(url=url, literal_binds=True, dialect_opts={"paramstyle": "named"})
    if sqlite:  # as online: a table copied and dropped must not take its references along
        context.execute("PRAGMA foreign_keys = OFF")
    with context.begin_transaction():
        context.run_migrations()
    if sqlite:
        context.execute("PRAGMA foreign_keys = ON")


def run_migrations_on(connection: Connection) -> None:
    """Migrate through `connection`, which is not in a transaction: one is begun here, after
    SQLite's foreign keys are turned off, and committed once every reference checks out."""
    with foreign_keys_off(connection), connection.begin():
        lock_for_migration(connection)  # other processes migrating this database go first
        # SQLite alters tables by copying them; batch mode writes migrations that way.
        _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()
        check_foreign_keys(connection)


async def _run_migrations_with_own_engine() -> None:
    engine = create_engine(_database_url())
    try:
        async with for_writes(engine).connect() as connection:
            await connection.run_sync(run_migrations_on)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_migrations_on(connection)
    else:
        asyncio.run(_run_migrations_with_own_engine())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
