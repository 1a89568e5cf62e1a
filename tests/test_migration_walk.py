"""Every migration down and back up keeps the rows of every table that stays: walked one
revision at a time over whatever revisions exist (Alembic's script directory), with a row in
every table at each step, on SQLite and PostgreSQL (TEST_DATABASE_URL).

The rows are made from the reflected schema itself (a value of each column's type, foreign
keys pointing at rows made first), so a migration added later is walked without a change
here. A downgrade that rebuilds a table on SQLite used to cascade-delete the rows referring
to it (0004 -> 0003 emptied `iterations` and `context_sources`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bot.storage._engine import create_engine
from bot.storage._migrate import current_revision, downgrade, revisions, upgrade

Snapshot = dict[str, list[dict[str, Any]]]
WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _value(column: sa.Column[Any], table: str, serial: int) -> Any:
    kind = column.type
    if isinstance(kind, sa.Boolean):
        return True
    if isinstance(kind, sa.DateTime):
        return WHEN
    if isinstance(kind, sa.Float | sa.Numeric) and not isinstance(kind, sa.Integer):
        return 1.5
    if isinstance(kind, sa.Integer):
        return 1000 + serial
    length = getattr(kind, "length", None) or 64
    return f"{table[:4]}{column.name[:6]}{serial}"[:length]


def fill_every_table(connection: Connection, serial: int) -> None:
    """One more row in every table (alembic_version aside), parents before children."""
    metadata = sa.MetaData()
    metadata.reflect(connection)
    for table in metadata.sorted_tables:
        if table.name == "alembic_version":
            continue
        parents = {fk.parent.name: fk.column for fk in table.foreign_keys}
        row: dict[str, Any] = {}
        for column in table.columns:
            if column.name in parents:
                target = parents[column.name]
                query = sa.select(target).order_by(target.desc()).limit(1)
                row[column.name] = connection.execute(query).scalar_one()
            elif column.primary_key and isinstance(column.type, sa.Integer):
                continue  # autoincrement
            else:
                row[column.name] = _value(column, table.name, serial)
        connection.execute(table.insert().values(**row))


def snapshot_tables(connection: Connection) -> Snapshot:
    metadata = sa.MetaData()
    metadata.reflect(connection)
    shot: Snapshot = {}
    for table in metadata.sorted_tables:
        if table.name == "alembic_version":
            continue
        rows = connection.execute(sa.select(table)).mappings().all()
        key = [c.name for c in table.columns]
        shot[table.name] = sorted((dict(r) for r in rows), key=lambda r: [str(r[k]) for k in key])
    return shot


def _kept(before: Snapshot, after: Snapshot) -> list[str]:
    """What `after` lost of `before`, for the tables and columns both have."""
    lost = []
    for table, rows in before.items():
        if table not in after:
            continue
        columns = set(rows[0]) & set(after[table][0]) if rows and after[table] else set()
        old = [{c: r[c] for c in sorted(columns)} for r in rows]
        new = [{c: r[c] for c in sorted(columns)} for r in after[table]]
        if len(rows) != len(after[table]) or old != new:
            lost.append(f"{table}: {len(rows)} row(s) before, {len(after[table])} after")
    return lost


async def test_every_revision_down_and_back_up_keeps_every_row(database_url):
    engine = create_engine(database_url)
    chain = revisions()
    assert chain[:6] == ["0001", "0002", "0003", "0004", "0005", "0006"]
    serial = 0

    async def fill_and_snapshot() -> Snapshot:
        nonlocal serial
        serial += 1
        async with engine.begin() as connection:
            await connection.run_sync(fill_every_table, serial)
        async with engine.connect() as connection:
            return await connection.run_sync(snapshot_tables)

    async def snapshot() -> Snapshot:
        async with engine.connect() as connection:
            return await connection.run_sync(snapshot_tables)

    try:
        await upgrade(engine)
        steps = []
        for older, newer in reversed(list(pairwise(chain))):
            before = await fill_and_snapshot()
            assert all(before.values()), "a table without a row tests nothing"
            await downgrade(engine, older)
            assert await current_revision(engine) == older
            after = await snapshot()
            steps.append((f"{newer} -> {older}", _kept(before, after)))
        for older, newer in pairwise(chain):
            before = await fill_and_snapshot()
            await upgrade(engine, newer)
            assert await current_revision(engine) == newer
            after = await snapshot()
            assert set(before) <= set(after)
            steps.append((f"{older} -> {newer}", _kept(before, after)))
        assert [(step, lost) for step, lost in steps if lost] == []
        assert len(steps) == 2 * (len(chain) - 1)
    finally:
        await engine.dispose()
