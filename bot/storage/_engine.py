"""Creating the async engine, with the SQLite settings that let several writers share one file.

Every engine checks a pooled connection before handing it out (a database server restarted
meanwhile costs a reconnect, not a failed write) and keeps statement parameters, which hold
Slack content and model output, out of its error messages and logs.

SQLite gets WAL (readers never block the writer), a busy timeout (a writer waits for the lock
instead of failing with "database is locked"), foreign keys, and transactions whose BEGIN we
emit ourselves: writes use BEGIN IMMEDIATE, so they take the write lock up front and queue on
the busy timeout, rather than upgrading a read lock halfway through, which SQLite refuses
at once without waiting.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, InvalidRequestError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///rlm.db"

BUSY_TIMEOUT_SECONDS = 30
CONNECT_TIMEOUT_SECONDS = 10  # PostgreSQL: an unreachable server fails the start, not hangs it

# Execution option read by the "begin" hook; set on the engine used for writes.
BEGIN_MODE_OPTION = "rlm_sqlite_begin"

# aiosqlite logs every statement with its parameters (Slack content, model output) at DEBUG.
logging.getLogger("aiosqlite").setLevel(logging.INFO)

_BAD_URL = (
    "DATABASE_URL {url} cannot be used ({detail}); give a SQLAlchemy async URL such as "
    "sqlite+aiosqlite:///rlm.db or postgresql+asyncpg://user:pass@host/db."
)
_NO_DRIVER = (
    "its driver {driver} is not installed; for PostgreSQL use postgresql+asyncpg:// with the "
    "postgres extra: pip install 'rlm-slack[postgres]'"
)


def _is_memory_database(url: URL) -> bool:
    database = url.database or ""
    return database in ("", ":memory:") or "mode=memory" in database


def create_engine(database_url: str) -> AsyncEngine:
    """An async engine for `database_url`, set up for concurrent use; ValueError if unusable."""
    try:
        url = make_url(database_url)
    except ArgumentError as exc:
        raise ValueError(_BAD_URL.format(url=repr(database_url), detail=exc)) from None
    shown = url.render_as_string(hide_password=True)

    options: dict[str, Any] = {"pool_pre_ping": True, "hide_parameters": True}
    is_sqlite = url.get_backend_name() == "sqlite"
    if url.drivername.partition("+")[2] == "asyncpg":
        options["connect_args"] = {"timeout": CONNECT_TIMEOUT_SECONDS}
    if is_sqlite:
        options["connect_args"] = {"timeout": BUSY_TIMEOUT_SECONDS}
        if _is_memory_database(url):
            # Every connection to :memory: is a separate, empty database: keep exactly one
            # and make concurrent users take turns on it.
            options.update(poolclass=AsyncAdaptedQueuePool, pool_size=1, max_overflow=0)
        elif not (url.database or "").startswith("file:"):
            try:
                Path(url.database or "").expanduser().parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ValueError(_BAD_URL.format(url=shown, detail=exc.strerror)) from None

    try:
        engine = create_async_engine(url, **options)
    except ImportError as exc:
        driver = exc.name or url.drivername
        detail = _NO_DRIVER.format(driver=driver)
        raise ValueError(_BAD_URL.format(url=shown, detail=detail)) from None
    except (ArgumentError, InvalidRequestError) as exc:
        raise ValueError(_BAD_URL.format(url=shown, detail=exc)) from None

    if is_sqlite:
        _configure_sqlite(engine)
    return engine


def for_writes(engine: AsyncEngine) -> AsyncEngine:
    """The same engine (same pool), whose transactions take SQLite's write lock at BEGIN."""
    return engine.execution_options(**{BEGIN_MODE_OPTION: "IMMEDIATE"})


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take BEGIN away from the driver so the "begin" hook below decides its kind.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_SECONDS * 1000}")
            _use_wal(cursor)
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get(BEGIN_MODE_OPTION, "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


def _use_wal(cursor: Any) -> None:
    """Put the database in WAL mode (it stays so); tolerate others doing it at the same time.

    Switching the journal mode needs the database to itself, and SQLite answers "database is
    locked" at once, without the busy timeout, when another connection is switching it too:
    several processes opening a new database together. The mode persists in the file, so a
    connection that lost that race finds it already set after a short wait.
    """
    for attempt in range(50):
        try:
            cursor.execute("PRAGMA journal_mode")
            if str(cursor.fetchone()[0]).lower() == "wal":
                return
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 49:
                raise
            time.sleep(0.01)  # blocks briefly, and only in this first-open race
