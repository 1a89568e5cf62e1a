"""What the database keeps about each workspace as a tenant: its admins' settings, which
organisation it belongs to, and uninstalls waiting to have their data purged.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, or_, select

from bot.storage._models import (
    File,
    Run,
    Uninstall,
    Workspace,
    WorkspaceEnterprise,
    WorkspaceSetting,
)
from bot.storage._store import Store
from bot.storage._writes import upsert as _upsert

# The columns of workspace_settings an admin may set.
SETTING_COLUMNS = (
    "root_model",
    "sub_model",
    "max_parallel_calls",
    "max_runs",
    "daily_tokens",
    "history_messages",
    "history_days",
)


@dataclass(frozen=True)
class Purged:
    teams: tuple[str, ...]
    runs: int
    files: int


class TenantStore:
    """Per-workspace rows on the bot's `Store` (same engine, same write turn)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def settings(self, team_id: str) -> dict[str, Any]:
        """The values a workspace's admins set (absent: the operator's default)."""
        async with self.store._read() as session:
            row = await session.get(WorkspaceSetting, team_id)
        if row is None:
            return {}
        return {c: getattr(row, c) for c in SETTING_COLUMNS if getattr(row, c) is not None}

    async def set_setting(self, team_id: str, column: str, value: Any, *, user_id: str) -> None:
        """Set one setting (None: back to the default)."""
        if column not in SETTING_COLUMNS:
            raise ValueError(f"unknown workspace setting {column!r}")
        async with self.store._writing() as session:
            row = await session.get(WorkspaceSetting, team_id)
            if row is None:
                row = WorkspaceSetting(team_id=team_id)
                session.add(row)
            setattr(row, column, value)
            row.updated_by = user_id
            row.updated_at = datetime.now(UTC)

    async def link_enterprise(self, team_id: str, enterprise_id: str) -> None:
        async with self.store._writing() as session:
            await _upsert(
                session,
                WorkspaceEnterprise,
                {"team_id": team_id},
                {"enterprise_id": enterprise_id},
            )

    async def enterprise_of(self, team_id: str) -> str | None:
        async with self.store._read() as session:
            row = await session.get(WorkspaceEnterprise, team_id)
        return None if row is None else row.enterprise_id

    async def teams_of(self, enterprise_id: str) -> list[str]:
        query = select(WorkspaceEnterprise.team_id).where(
            WorkspaceEnterprise.enterprise_id == enterprise_id
        )
        async with self.store._read() as session:
            return list((await session.execute(query)).scalars())

    async def record_uninstall(
        self, owner_id: str, *, is_enterprise: bool, purge_after: datetime
    ) -> None:
        async with self.store._writing() as session:
            await _upsert(
                session,
                Uninstall,
                {"owner_id": owner_id},
                {
                    "is_enterprise": is_enterprise,
                    "uninstalled_at": datetime.now(UTC),
                    "purge_after": purge_after,
                },
            )

    async def clear_uninstall(self, owner_id: str) -> None:
        """A reinstall keeps the workspace's data: it is no longer waiting to be purged."""
        async with self.store._writing() as session:
            await session.execute(delete(Uninstall).where(Uninstall.owner_id == owner_id))

    async def due_uninstalls(self, now: datetime | None = None) -> list[tuple[str, bool]]:
        now = now or datetime.now(UTC)
        query = select(Uninstall.owner_id, Uninstall.is_enterprise).where(
            Uninstall.purge_after <= now
        )
        async with self.store._read() as session:
            return [(o, bool(e)) for o, e in (await session.execute(query)).all()]

    async def purge(self, owner_id: str, *, is_enterprise: bool) -> Purged:
        """Delete a workspace's (or an organisation's workspaces') runs, iterations, files
        and settings, and the uninstall record itself."""
        teams = await self.teams_of(owner_id) if is_enterprise else [owner_id]
        async with self.store._writing() as session:
            runs = files = 0
            if teams:
                # Iterations and context sources go with their runs (ON DELETE CASCADE).
                runs = _count(await session.execute(delete(Run).where(Run.team_id.in_(teams))))
                files = _count(await session.execute(delete(File).where(File.team_id.in_(teams))))
                await session.execute(
                    delete(WorkspaceSetting).where(WorkspaceSetting.team_id.in_(teams))
                )
                await session.execute(delete(Workspace).where(Workspace.team_id.in_(teams)))
            await session.execute(
                delete(WorkspaceEnterprise).where(
                    or_(
                        WorkspaceEnterprise.team_id.in_(teams),
                        WorkspaceEnterprise.enterprise_id == owner_id,
                    )
                )
            )
            await session.execute(delete(Uninstall).where(Uninstall.owner_id == owner_id))
        return Purged(teams=tuple(teams), runs=runs, files=files)


def _count(result: Any) -> int:
    """Rows a DELETE removed (a CursorResult's rowcount)."""
    return int(getattr(result, "rowcount", 0) or 0)
