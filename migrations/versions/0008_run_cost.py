"""What a run cost in money: `cost_usd` on runs and iterations, cached input tokens on runs.

`cost_usd` is US dollars at the price table the app ran with; NULL where a model had no
price (the cost is unknown, not 0) and for runs from before this revision. The columns are
added in place (no table copy), and the downgrade drops them in place too: on SQLite with
ALTER TABLE ... DROP COLUMN, never a batch rebuild (see 0007 for why).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None

_COLUMNS = (("runs", "cost_usd"), ("runs", "cached_input_tokens"), ("iterations", "cost_usd"))


def upgrade() -> None:
    op.add_column("runs", sa.Column("cost_usd", sa.Float(), nullable=True))
    op.add_column(
        "runs",
        sa.Column(
            "cached_input_tokens",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
            server_default="0",
        ),
    )
    op.add_column("iterations", sa.Column("cost_usd", sa.Float(), nullable=True))


def downgrade() -> None:
    bind = op.get_bind()
    for table, name in reversed(_COLUMNS):
        if bind.dialect.name == "sqlite":
            op.execute(sa.text(f"ALTER TABLE {table} DROP COLUMN {name}"))
        else:
            op.drop_column(table, name)
