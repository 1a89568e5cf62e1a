"""Files remember their last change; assistant pane threads; configuration problems.

`files.changed` is Slack's marker of a file's last edit, so a file read on demand is fetched
again only when it changed. `assistant_threads` keeps the channel each assistant pane thread
is viewing (across restarts and replicas). `problems` holds what only an operator can fix,
for admins on App Home.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("files") as batch:
        batch.add_column(sa.Column("changed", sa.String(32), nullable=True))

    op.create_table(
        "assistant_threads",
        sa.Column("channel_id", sa.String(32), nullable=False),
        sa.Column("thread_ts", sa.String(32), nullable=False),
        sa.Column("team_id", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=True),
        sa.Column("viewed_channel_id", sa.String(32), nullable=True),
        sa.Column("viewed_team_id", sa.String(32), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("channel_id", "thread_ts", name="pk_assistant_threads"),
    )

    op.create_table(
        "problems",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("team_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("fix", sa.Text(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_problems"),
        sa.UniqueConstraint("team_id", "kind", name="uq_problems_team_id_kind"),
    )


def downgrade() -> None:
    op.drop_table("problems")
    op.drop_table("assistant_threads")
    with op.batch_alter_table("files") as batch:
        batch.drop_column("changed")
