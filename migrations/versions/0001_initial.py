"""Initial schema.

Workspaces, runs with their iterations and context sources, the text of channel files, and
the event ids already handled (so a retried Slack delivery never starts a second run).

Revision ID: 0001
Revises:
Create Date: 2025-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def _created_at() -> sa.Column[object]:
    return sa.Column("created_at", sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        "workspaces",
        sa.Column("team_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(255), nullable=True),
        _created_at(),
        sa.PrimaryKeyConstraint("team_id", name="pk_workspaces"),
    )

    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("team_id", sa.String(32), nullable=False),
        sa.Column("channel_id", sa.String(32), nullable=False),
        sa.Column("thread_ts", sa.String(32), nullable=True),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("answer", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("root_model", sa.String(200), nullable=False),
        sa.Column("sub_model", sa.String(200), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("iterations", sa.Integer(), nullable=False),
        sa.Column("subcalls", sa.Integer(), nullable=False),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("stopped_by", sa.String(32), nullable=True),
        _created_at(),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
        sa.ForeignKeyConstraint(
            ["team_id"], ["workspaces.team_id"], name="fk_runs_team_id_workspaces"
        ),
    )
    op.create_index("ix_runs_status", "runs", ["status"])
    op.create_index("ix_runs_team_id_created_at", "runs", ["team_id", "created_at"])
    op.create_index("ix_runs_channel_id", "runs", ["channel_id"])

    op.create_table(
        "iterations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("iteration", sa.Integer(), nullable=False),
        sa.Column("root_reply", sa.Text(), nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("output", sa.Text(), nullable=False),
        sa.Column("subcalls", sa.Integer(), nullable=False),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name="pk_iterations"),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name="fk_iterations_run_id_runs", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("run_id", "iteration", name="uq_iterations_run_id_iteration"),
    )

    op.create_table(
        "context_sources",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("ref", sa.String(255), nullable=False),
        sa.Column("items", sa.Integer(), nullable=False),
        sa.Column("chars", sa.Integer(), nullable=False),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name="pk_context_sources"),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name="fk_context_sources_run_id_runs", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_context_sources_run_id", "context_sources", ["run_id"])

    op.create_table(
        "files",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("team_id", sa.String(32), nullable=False),
        sa.Column("channel_id", sa.String(32), nullable=False),
        sa.Column("file_id", sa.String(32), nullable=False),
        sa.Column("thread_ts", sa.String(32), nullable=True),
        sa.Column("name", sa.String(1024), nullable=False),
        sa.Column("mimetype", sa.String(255), nullable=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=True),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name="pk_files"),
        sa.ForeignKeyConstraint(
            ["team_id"], ["workspaces.team_id"], name="fk_files_team_id_workspaces"
        ),
        sa.UniqueConstraint("channel_id", "file_id", name="uq_files_channel_id_file_id"),
    )

    op.create_table(
        "handled_events",
        sa.Column("event_id", sa.String(128), nullable=False),
        _created_at(),
        sa.PrimaryKeyConstraint("event_id", name="pk_handled_events"),
    )


def downgrade() -> None:
    op.drop_table("handled_events")
    op.drop_table("files")
    op.drop_index("ix_context_sources_run_id", table_name="context_sources")
    op.drop_table("context_sources")
    op.drop_table("iterations")
    op.drop_index("ix_runs_channel_id", table_name="runs")
    op.drop_index("ix_runs_team_id_created_at", table_name="runs")
    op.drop_index("ix_runs_status", table_name="runs")
    op.drop_table("runs")
    op.drop_table("workspaces")
