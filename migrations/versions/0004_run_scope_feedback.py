"""Runs keep their scope and how they failed; feedback on answers.

A run records what it was asked over (`scope`: "channel" or "thread", and `scope_ts`, the
thread's ts) so a follow-up in its thread reads the same, and an `error_kind` saying who can
fix a failure ("operator:..." for a bad key, an unknown model or a missing scope), and the
ts of its status message (so a restart can mark that message interrupted). Feedback is one
👍 or 👎 per user per run.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("scope", sa.String(16), nullable=True))
        batch.add_column(sa.Column("scope_ts", sa.String(32), nullable=True))
        batch.add_column(sa.Column("error_kind", sa.String(64), nullable=True))
        batch.add_column(sa.Column("status_ts", sa.String(32), nullable=True))
    op.create_index("ix_runs_channel_id_thread_ts", "runs", ["channel_id", "thread_ts"])
    op.create_table(
        "run_feedback",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("value", sa.String(8), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_run_feedback"),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name="fk_run_feedback_run_id_runs", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("run_id", "user_id", name="uq_run_feedback_run_id_user_id"),
    )


def downgrade() -> None:
    op.drop_table("run_feedback")
    op.drop_index("ix_runs_channel_id_thread_ts", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("status_ts")
        batch.drop_column("error_kind")
        batch.drop_column("scope_ts")
        batch.drop_column("scope")
