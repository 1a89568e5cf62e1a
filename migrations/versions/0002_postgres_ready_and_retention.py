"""PostgreSQL-ready counts, and indexes for retention and file events.

Token, sub-call, character and byte counts become BIGINT (on SQLite, INTEGER already holds 64
bits, and rebuilding `runs` there would cascade-delete its iterations, so it is left as is).
Indexes on `created_at` let the retention purge find old rows without scanning; one on
`files.file_id` serves `file_deleted` and `file_change` events.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

COUNTS = {
    "runs": ("subcalls", "input_tokens", "output_tokens"),
    "iterations": ("subcalls", "input_tokens", "output_tokens"),
    "context_sources": ("items", "chars"),
    "files": ("size",),
}
INDEXES = (
    ("ix_runs_created_at", "runs", "created_at"),
    ("ix_files_file_id", "files", "file_id"),
    ("ix_files_created_at", "files", "created_at"),
    ("ix_handled_events_created_at", "handled_events", "created_at"),
)


def _retype(to: sa.types.TypeEngine[int], was: sa.types.TypeEngine[int]) -> None:
    if op.get_context().dialect.name == "sqlite":
        return
    for table, columns in COUNTS.items():
        for column in columns:
            op.alter_column(table, column, type_=to, existing_type=was, existing_nullable=False)


def upgrade() -> None:
    _retype(sa.BigInteger(), sa.Integer())
    for name, table, column in INDEXES:
        op.create_index(name, table, [column])


def downgrade() -> None:
    for name, table, _column in reversed(INDEXES):
        op.drop_index(name, table_name=table)
    _retype(sa.Integer(), sa.BigInteger())
