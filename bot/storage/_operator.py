"""Opening a database for the operator's commands and for the app: migrate it, or look at it
without changing anything, turning every failure into one line that says what to fix."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.storage import _migrate
from bot.storage._engine import _is_memory_database, create_engine

CANNOT_OPEN = "The database at {url} could not be opened ({detail}); check DATABASE_URL."
MIGRATION_FAILED = "The database at {url}: {detail}."


@dataclass(frozen=True, slots=True)
class DatabaseState:
    """What `rlm-bot check` reports: where the database is and which schema it has."""

    shown_url: str  # password hidden
    exists: bool  # False: a SQLite file not created yet
    revision: str | None  # None: never migrated
    head: str | None

    @property
    def current(self) -> bool:
        return self.revision == self.head


def connection_problem(exc: BaseException) -> str:
    """What went wrong reaching the database, in a few words and without any statement."""
    orig = getattr(exc, "orig", None) or exc
    if isinstance(orig, ConnectionRefusedError):
        return "connection refused: is the database server running and reachable there?"
    if isinstance(orig, TimeoutError):
        return "no answer in time: is the database server reachable there?"
    if isinstance(orig, OSError) and orig.strerror:
        return orig.strerror
    text = " ".join(str(orig).split())
    return text.split(">: ", 1)[-1] if text.startswith("<class ") else text


async def open_migrated(
    database_url: str, revision: str = "head"
) -> tuple[AsyncEngine, str | None]:
    """An engine for `database_url`, its schema migrated to `revision` (the newest by
    default; an older one migrates down); with the revision it had before (None: empty).
    ValueError, one line, if it cannot be reached or migrated."""
    engine = create_engine(database_url)
    shown = engine.url.render_as_string(hide_password=True)
    try:
        before = await _migrate.current_revision(engine)
        if revision == "base" or (
            revision != "head" and revision != before and _migrate.is_ancestor(revision, before)
        ):
            await _migrate.downgrade(engine, revision)
        else:
            await _migrate.upgrade(engine, revision)
    except (DBAPIError, OSError) as exc:  # the server refused us, the file cannot be opened
        await engine.dispose()
        raise ValueError(CANNOT_OPEN.format(url=shown, detail=connection_problem(exc))) from None
    except _migrate.MigrationError as exc:
        await engine.dispose()
        raise ValueError(MIGRATION_FAILED.format(url=shown, detail=exc)) from None
    except BaseException:
        await engine.dispose()
        raise
    return engine, before


async def migrate_database(
    database_url: str, revision: str = "head"
) -> tuple[str | None, str | None]:
    """Migrate the database to `revision`, up or down: (revision before, revision after)."""
    engine, before = await open_migrated(database_url, revision)
    try:
        return before, await _migrate.current_revision(engine)
    finally:
        await engine.dispose()


async def inspect_database(database_url: str) -> DatabaseState:
    """Connect and read the schema's revision, changing nothing (a SQLite file that does not
    exist yet is reported, not created). ValueError, one line, if it cannot be reached."""
    url = make_url(database_url) if "://" in database_url else None
    head = _migrate.head_revision()
    if url is not None and url.get_backend_name() == "sqlite" and not _is_memory_database(url):
        path = Path(url.database or "").expanduser()  # noqa: ASYNC240 (one stat)
        if not (url.database or "").startswith("file:") and not path.exists():
            shown = url.render_as_string(hide_password=True)
            return DatabaseState(shown_url=shown, exists=False, revision=None, head=head)
    engine = create_engine(database_url)
    shown = engine.url.render_as_string(hide_password=True)
    try:
        revision = await _migrate.current_revision(engine)
    except (DBAPIError, OSError) as exc:
        raise ValueError(CANNOT_OPEN.format(url=shown, detail=connection_problem(exc))) from None
    finally:
        await engine.dispose()
    return DatabaseState(shown_url=shown, exists=True, revision=revision, head=head)
