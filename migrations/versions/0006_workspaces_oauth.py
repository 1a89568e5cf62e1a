"""Many workspaces: OAuth installations and states, per-workspace settings, uninstalls.

Installations and bots hold their tokens encrypted (bot/crypto.py), in TEXT columns since a
Fernet value is longer than the token it hides. OAuth states are kept as keyed hashes, used
once. A workspace's settings are NULL where it takes the operator's default.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def _when(name: str, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _bot_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("client_id", sa.String(32), nullable=False),
        sa.Column("app_id", sa.String(32), nullable=True),
        sa.Column("enterprise_id", sa.String(32), nullable=True),
        sa.Column("enterprise_name", sa.String(200), nullable=True),
    ]


def upgrade() -> None:
    op.create_table(
        "slack_installations",
        *_bot_columns(),
        sa.Column("enterprise_url", sa.String(200), nullable=True),
        sa.Column("team_id", sa.String(32), nullable=True),
        sa.Column("team_name", sa.String(200), nullable=True),
        sa.Column("bot_token", sa.Text(), nullable=True),
        sa.Column("bot_id", sa.String(32), nullable=True),
        sa.Column("bot_user_id", sa.String(32), nullable=True),
        sa.Column("bot_scopes", sa.String(1000), nullable=True),
        sa.Column("bot_refresh_token", sa.Text(), nullable=True),
        _when("bot_token_expires_at"),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("user_token", sa.Text(), nullable=True),
        sa.Column("user_scopes", sa.String(1000), nullable=True),
        sa.Column("user_refresh_token", sa.Text(), nullable=True),
        _when("user_token_expires_at"),
        sa.Column("incoming_webhook_url", sa.Text(), nullable=True),
        sa.Column("incoming_webhook_channel", sa.String(200), nullable=True),
        sa.Column("incoming_webhook_channel_id", sa.String(200), nullable=True),
        sa.Column("incoming_webhook_configuration_url", sa.Text(), nullable=True),
        sa.Column("is_enterprise_install", sa.Boolean(), nullable=False),
        sa.Column("token_type", sa.String(32), nullable=True),
        _when("installed_at", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_slack_installations"),
    )
    op.create_index(
        "ix_slack_installations_lookup",
        "slack_installations",
        ["client_id", "enterprise_id", "team_id", "user_id"],
    )

    op.create_table(
        "slack_bots",
        *_bot_columns(),
        sa.Column("team_id", sa.String(32), nullable=True),
        sa.Column("team_name", sa.String(200), nullable=True),
        sa.Column("bot_token", sa.Text(), nullable=False),
        sa.Column("bot_id", sa.String(32), nullable=True),
        sa.Column("bot_user_id", sa.String(32), nullable=True),
        sa.Column("bot_scopes", sa.String(1000), nullable=True),
        sa.Column("bot_refresh_token", sa.Text(), nullable=True),
        _when("bot_token_expires_at"),
        sa.Column("is_enterprise_install", sa.Boolean(), nullable=False),
        _when("installed_at", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_slack_bots"),
    )
    op.create_index("ix_slack_bots_lookup", "slack_bots", ["client_id", "enterprise_id", "team_id"])

    op.create_table(
        "slack_oauth_states",
        sa.Column("state_hash", sa.String(64), nullable=False),
        _when("expire_at", nullable=False),
        sa.PrimaryKeyConstraint("state_hash", name="pk_slack_oauth_states"),
    )

    op.create_table(
        "workspace_settings",
        sa.Column("team_id", sa.String(32), nullable=False),
        sa.Column("root_model", sa.String(200), nullable=True),
        sa.Column("sub_model", sa.String(200), nullable=True),
        sa.Column("max_parallel_calls", sa.Integer(), nullable=True),
        sa.Column("max_runs", sa.Integer(), nullable=True),
        sa.Column("daily_tokens", sa.Integer(), nullable=True),
        sa.Column("history_messages", sa.Integer(), nullable=True),
        sa.Column("history_days", sa.Integer(), nullable=True),
        sa.Column("updated_by", sa.String(32), nullable=True),
        _when("updated_at", nullable=False),
        sa.PrimaryKeyConstraint("team_id", name="pk_workspace_settings"),
    )

    op.create_table(
        "workspace_enterprises",
        sa.Column("team_id", sa.String(32), nullable=False),
        sa.Column("enterprise_id", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("team_id", name="pk_workspace_enterprises"),
    )
    op.create_index(
        "ix_workspace_enterprises_enterprise_id", "workspace_enterprises", ["enterprise_id"]
    )

    op.create_table(
        "uninstalls",
        sa.Column("owner_id", sa.String(32), nullable=False),
        sa.Column("is_enterprise", sa.Boolean(), nullable=False),
        _when("uninstalled_at", nullable=False),
        _when("purge_after", nullable=False),
        sa.PrimaryKeyConstraint("owner_id", name="pk_uninstalls"),
    )


def downgrade() -> None:
    op.drop_table("uninstalls")
    op.drop_index("ix_workspace_enterprises_enterprise_id", table_name="workspace_enterprises")
    op.drop_table("workspace_enterprises")
    op.drop_table("workspace_settings")
    op.drop_table("slack_oauth_states")
    op.drop_index("ix_slack_bots_lookup", table_name="slack_bots")
    op.drop_table("slack_bots")
    op.drop_index("ix_slack_installations_lookup", table_name="slack_installations")
    op.drop_table("slack_installations")
