"""Which database the tests run on: a SQLite file by default, PostgreSQL when asked.

Set `TEST_DATABASE_URL` (or `DATABASE_URL`) to a `postgresql+asyncpg://` URL and every test
that stores anything gets its own fresh database on that server, named uniquely and dropped
afterwards; the URL's own database is used only to create and drop them. Any other value (or
none) keeps each test on a SQLite file in its tmp_path.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy.engine import URL, make_url

T = TypeVar("T")

POSTGRES_DRIVERS = ("postgresql+asyncpg",)
PREFIX = "rlm_test_"


def server_url() -> URL | None:
    """The PostgreSQL server the suite was pointed at, or None for SQLite."""
    for name in ("TEST_DATABASE_URL", "DATABASE_URL"):
        value = os.environ.get(name, "").strip()
        if value:
            url = make_url(value)
            return url if url.drivername in POSTGRES_DRIVERS else None
    return None


ON_POSTGRES = server_url() is not None
SQLITE_ONLY = pytest.mark.skipif(ON_POSTGRES, reason="SQLite-only check (suite runs on PostgreSQL)")
POSTGRES_ONLY = pytest.mark.skipif(
    not ON_POSTGRES,
    reason="needs PostgreSQL: set TEST_DATABASE_URL=postgresql+asyncpg://... (make test-postgres)",
)


def run_in_thread(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to the end on its own loop in a helper thread: usable from sync
    fixtures whether or not the test's loop is running."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(make())
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]  # type: ignore[no-any-return]


async def _admin(url: URL, sql: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        user=url.username or "postgres",
        password=url.password,
        database=url.database or "postgres",
    )
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def terminate_connections(url: str) -> int:
    """What a server restart does to a pool: every connection to `url`'s database cut.
    Returns how many there were."""
    import asyncpg

    server = server_url()
    assert server is not None
    connection = await asyncpg.connect(
        host=server.host or "127.0.0.1",
        port=server.port or 5432,
        user=server.username or "postgres",
        password=server.password,
        database=server.database or "postgres",
    )
    try:
        rows = await connection.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            make_url(url).database,
        )
        return len(rows)
    finally:
        await connection.close()


def create_database(server: URL) -> str:
    """A new, empty database on `server`; returns its async URL (password included)."""
    name = f"{PREFIX}{uuid.uuid4().hex[:16]}"
    try:
        run_in_thread(lambda: _admin(server, f'CREATE DATABASE "{name}"'))
    except OSError as exc:
        shown = server.render_as_string(hide_password=True)
        raise RuntimeError(
            f"TEST_DATABASE_URL points at {shown}, which cannot be reached ({exc}): start "
            "PostgreSQL there, or unset TEST_DATABASE_URL to test on SQLite"
        ) from None
    return server.set(database=name).render_as_string(hide_password=False)


def drop_database(server: URL, url: str) -> None:
    name = make_url(url).database
    assert name and name.startswith(PREFIX)
    run_in_thread(lambda: _admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


class Databases:
    """Hands out database URLs for one test and removes what it made at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.server = server_url()
        self._made: list[str] = []

    def new(self, name: str = "rlm.db") -> str:
        """A fresh database: on PostgreSQL a new one each call, else the SQLite file `name`."""
        if self.server is None:
            return f"sqlite+aiosqlite:///{self.tmp_path / name}"
        url = create_database(self.server)
        self._made.append(url)
        return url

    def close(self) -> None:
        assert self.server is not None or not self._made
        for url in self._made:
            drop_database(self.server, url)  # type: ignore[arg-type]
        self._made.clear()
