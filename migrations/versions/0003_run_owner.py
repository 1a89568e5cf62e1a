"""Runs name the replica that runs them, and keep what any replica needs to start them.

`runs.owner` holds the replica id whose liveness lease (in Redis) says whether the run is
still being worked on; recovery marks interrupted only the runs of replicas that are gone.
`exclude_ts` (with the run's scope, from 0004) lets whichever replica has room take a queued
run from the table.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("owner", sa.String(64), nullable=True))
        batch.add_column(sa.Column("exclude_ts", sa.String(255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("exclude_ts")
        batch.drop_column("owner")
