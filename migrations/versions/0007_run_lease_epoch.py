"""A run's ownership lives in its row: a lease its replica renews and a fencing epoch.

`lease_expires_at` is renewed by the replica running the run (in the database's own clock);
only a run whose lease ran out there is marked interrupted. `epoch` grows by one on every
claim, and every status write names the owner and epoch it holds, so a replica that lost a
run (its lease ran out, another marked it) cannot overwrite what the run became.

Both columns are added in place (no table copy). The downgrade drops them in place too: on
SQLite with ALTER TABLE ... DROP COLUMN (3.35+), never a batch rebuild, whose DROP TABLE of
`runs` would cascade (PRAGMA foreign_keys is on) and delete every iteration and context row.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None

_COLUMNS = ("lease_expires_at", "epoch")


def upgrade() -> None:
    # add_column outside batch mode: SQLite's ALTER TABLE ADD COLUMN keeps the table as is.
    op.add_column("runs", sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "runs", sa.Column("epoch", sa.Integer(), nullable=False, server_default=sa.text("0"))
    )


def downgrade() -> None:
    bind = op.get_bind()
    for name in reversed(_COLUMNS):
        if bind.dialect.name == "sqlite":
            # Not op.drop_column: on SQLite Alembic would rebuild the table (see above).
            op.execute(sa.text(f"ALTER TABLE runs DROP COLUMN {name}"))
        else:
            op.drop_column("runs", name)
