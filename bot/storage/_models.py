"""ORM models for the bot's tables; the schema itself is created only by the migrations.

A test checks that `migrations/` produces exactly these tables (autogenerate finds no
differences), so a change here needs a new migration in the same change.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Explicit constraint names keep migrations portable: SQLite and Postgres would otherwise
# invent different ones, and a later migration could not drop them by name.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_N_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that goes in as an aware datetime and always comes out aware, in UTC.

    SQLite keeps no zone, so values are normalised to UTC before storing and read back as UTC.
    """

    impl = DateTime
    cache_ok = True

    def __init__(self) -> None:
        super().__init__(timezone=True)

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("Timestamps must be timezone-aware; got a naive datetime.")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


_SURROGATE = re.compile("[\ud800-\udfff]")


def storable(text: str) -> str:
    """`text` as every database accepts it: NUL characters (PostgreSQL refuses them in text)
    and lone surrogates (not encodable as UTF-8) become U+FFFD."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = _SURROGATE.sub("\ufffd", text)
    return text


class BoundedString(TypeDecorator[str]):
    """A VARCHAR(n) that takes any string: made storable, then cut to n characters, so a
    long name or reference is kept shortened rather than refused (PostgreSQL enforces n)."""

    impl = String
    cache_ok = True

    def __init__(self, length: int) -> None:
        super().__init__(length)
        self.length = length

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else storable(value)[: self.length]


class StorableText(TypeDecorator[str]):
    """Unbounded text made storable (no NULs, valid UTF-8) on the way in."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else storable(value)


# Counts of tokens, sub-calls, characters and bytes can pass 2**31. SQLite's INTEGER already
# holds 64 bits (and its table rebuilds would cascade-delete children), so only other
# databases get BIGINT.
Count = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Workspace(Base):
    __tablename__ = "workspaces"

    team_id: Mapped[str] = mapped_column(BoundedString(32), primary_key=True)
    name: Mapped[str | None] = mapped_column(BoundedString(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_status", "status"),
        Index("ix_runs_team_id_created_at", "team_id", "created_at"),
        Index("ix_runs_channel_id", "channel_id"),
        Index("ix_runs_channel_id_thread_ts", "channel_id", "thread_ts"),
        Index("ix_runs_created_at", "created_at"),  # retention
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    team_id: Mapped[str] = mapped_column(BoundedString(32), ForeignKey("workspaces.team_id"))
    channel_id: Mapped[str] = mapped_column(BoundedString(32))
    thread_ts: Mapped[str | None] = mapped_column(BoundedString(32))
    user_id: Mapped[str] = mapped_column(BoundedString(32))
    question: Mapped[str] = mapped_column(StorableText())
    status: Mapped[str] = mapped_column(BoundedString(16))
    answer: Mapped[str | None] = mapped_column(StorableText())
    error: Mapped[str | None] = mapped_column(StorableText())
    root_model: Mapped[str] = mapped_column(BoundedString(200))
    sub_model: Mapped[str] = mapped_column(BoundedString(200))
    trigger: Mapped[str] = mapped_column(BoundedString(16))
    iterations: Mapped[int] = mapped_column(Integer, default=0)
    subcalls: Mapped[int] = mapped_column(Count, default=0)
    input_tokens: Mapped[int] = mapped_column(Count, default=0)
    output_tokens: Mapped[int] = mapped_column(Count, default=0)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    stopped_by: Mapped[str | None] = mapped_column(BoundedString(32))
    # US dollars at the app's price table; NULL: a model without a price, or before 0008.
    cost_usd: Mapped[float | None] = mapped_column(Float)
    cached_input_tokens: Mapped[int] = mapped_column(Count, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # What the run read: "channel" or "thread" (scope_ts: the thread), for its follow-ups.
    scope: Mapped[str | None] = mapped_column(String(16))
    scope_ts: Mapped[str | None] = mapped_column(String(32))
    # Who can fix a failure: "user:<what>" or "operator:<what>" (a key, a model, a scope).
    error_kind: Mapped[str | None] = mapped_column(String(64))
    status_ts: Mapped[str | None] = mapped_column(String(32))  # the run's status message
    # The replica running it, and until when (the database's clock) unless it renews; NULL
    # for runs from before (migration 0007) and runs of one process without replicas.
    owner: Mapped[str | None] = mapped_column(String(64))
    exclude_ts: Mapped[str | None] = mapped_column(String(255))  # comma-separated
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The fencing token: one more on every claim; status writes name the epoch they hold.
    epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Iteration(Base):
    __tablename__ = "iterations"
    __table_args__ = (UniqueConstraint("run_id", "iteration"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(Integer, ForeignKey("runs.id", ondelete="CASCADE"))
    iteration: Mapped[int] = mapped_column(Integer)
    root_reply: Mapped[str] = mapped_column(StorableText())
    code: Mapped[str] = mapped_column(StorableText())
    output: Mapped[str] = mapped_column(StorableText())
    subcalls: Mapped[int] = mapped_column(Count)
    input_tokens: Mapped[int] = mapped_column(Count)
    output_tokens: Mapped[int] = mapped_column(Count)
    seconds: Mapped[float] = mapped_column(Float)
    cost_usd: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class RunFeedback(Base):
    __tablename__ = "run_feedback"
    __table_args__ = (UniqueConstraint("run_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(Integer, ForeignKey("runs.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(String(32))
    value: Mapped[str] = mapped_column(String(8))  # "up" | "down"
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class ContextSource(Base):
    __tablename__ = "context_sources"
    __table_args__ = (Index("ix_context_sources_run_id", "run_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(Integer, ForeignKey("runs.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(BoundedString(32))
    ref: Mapped[str] = mapped_column(BoundedString(255))
    items: Mapped[int] = mapped_column(Count)
    chars: Mapped[int] = mapped_column(Count)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class File(Base):
    __tablename__ = "files"
    __table_args__ = (
        UniqueConstraint("channel_id", "file_id"),
        Index("ix_files_file_id", "file_id"),  # file_deleted / file_change events
        Index("ix_files_created_at", "created_at"),  # retention
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    team_id: Mapped[str] = mapped_column(BoundedString(32), ForeignKey("workspaces.team_id"))
    channel_id: Mapped[str] = mapped_column(BoundedString(32))
    file_id: Mapped[str] = mapped_column(BoundedString(32))
    thread_ts: Mapped[str | None] = mapped_column(BoundedString(32))
    name: Mapped[str] = mapped_column(BoundedString(1024))
    mimetype: Mapped[str | None] = mapped_column(BoundedString(255))
    size: Mapped[int] = mapped_column(Count)
    text: Mapped[str] = mapped_column(StorableText())
    user_id: Mapped[str | None] = mapped_column(BoundedString(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    # Slack's marker of the file's last change (`updated`/`edit_timestamp`), "" if never
    # edited, NULL when unknown: a stored text is stale when the marker moves on.
    changed: Mapped[str | None] = mapped_column(String(32))


class AssistantThread(Base):
    """What an assistant pane thread is looking at: the channel the user has open."""

    __tablename__ = "assistant_threads"

    channel_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    thread_ts: Mapped[str] = mapped_column(String(32), primary_key=True)
    team_id: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[str | None] = mapped_column(String(32))
    viewed_channel_id: Mapped[str | None] = mapped_column(String(32))
    viewed_team_id: Mapped[str | None] = mapped_column(String(32))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class Problem(Base):
    """A configuration problem only an operator can fix, shown to admins on App Home."""

    __tablename__ = "problems"
    __table_args__ = (UniqueConstraint("team_id", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    team_id: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text)
    fix: Mapped[str] = mapped_column(Text)
    count: Mapped[int] = mapped_column(Integer, default=1)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class HandledEvent(Base):
    __tablename__ = "handled_events"
    __table_args__ = (Index("ix_handled_events_created_at", "created_at"),)

    event_id: Mapped[str] = mapped_column(BoundedString(128), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


# Many workspaces: OAuth installations (tokens encrypted: bot/storage/_crypto.py), install states,
# per-workspace settings and uninstalls awaiting their purge. Created by migration 0006.


class SlackInstallation(Base):
    """One installation per (enterprise, team, installing user): the latest one kept."""

    __tablename__ = "slack_installations"
    __table_args__ = (
        Index("ix_slack_installations_lookup", "client_id", "enterprise_id", "team_id", "user_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    client_id: Mapped[str] = mapped_column(String(32))
    app_id: Mapped[str | None] = mapped_column(String(32))
    enterprise_id: Mapped[str | None] = mapped_column(String(32))
    enterprise_name: Mapped[str | None] = mapped_column(String(200))
    enterprise_url: Mapped[str | None] = mapped_column(String(200))
    team_id: Mapped[str | None] = mapped_column(String(32))
    team_name: Mapped[str | None] = mapped_column(String(200))
    bot_token: Mapped[str | None] = mapped_column(Text)  # encrypted
    bot_id: Mapped[str | None] = mapped_column(String(32))
    bot_user_id: Mapped[str | None] = mapped_column(String(32))
    bot_scopes: Mapped[str | None] = mapped_column(String(1000))
    bot_refresh_token: Mapped[str | None] = mapped_column(Text)  # encrypted
    bot_token_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    user_id: Mapped[str] = mapped_column(String(32))
    user_token: Mapped[str | None] = mapped_column(Text)  # encrypted
    user_scopes: Mapped[str | None] = mapped_column(String(1000))
    user_refresh_token: Mapped[str | None] = mapped_column(Text)  # encrypted
    user_token_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    incoming_webhook_url: Mapped[str | None] = mapped_column(Text)  # encrypted
    incoming_webhook_channel: Mapped[str | None] = mapped_column(String(200))
    incoming_webhook_channel_id: Mapped[str | None] = mapped_column(String(200))
    incoming_webhook_configuration_url: Mapped[str | None] = mapped_column(Text)
    is_enterprise_install: Mapped[bool] = mapped_column(Boolean, default=False)
    token_type: Mapped[str | None] = mapped_column(String(32))
    installed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class SlackBot(Base):
    """The bot of one (enterprise, team) installation, as Bolt's authorize looks it up."""

    __tablename__ = "slack_bots"
    __table_args__ = (Index("ix_slack_bots_lookup", "client_id", "enterprise_id", "team_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    client_id: Mapped[str] = mapped_column(String(32))
    app_id: Mapped[str | None] = mapped_column(String(32))
    enterprise_id: Mapped[str | None] = mapped_column(String(32))
    enterprise_name: Mapped[str | None] = mapped_column(String(200))
    team_id: Mapped[str | None] = mapped_column(String(32))
    team_name: Mapped[str | None] = mapped_column(String(200))
    bot_token: Mapped[str] = mapped_column(Text)  # encrypted
    bot_id: Mapped[str | None] = mapped_column(String(32))
    bot_user_id: Mapped[str | None] = mapped_column(String(32))
    bot_scopes: Mapped[str | None] = mapped_column(String(1000))
    bot_refresh_token: Mapped[str | None] = mapped_column(Text)  # encrypted
    bot_token_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    is_enterprise_install: Mapped[bool] = mapped_column(Boolean, default=False)
    installed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class OAuthState(Base):
    """An install's `state`, kept as its keyed hash until used once or expired."""

    __tablename__ = "slack_oauth_states"

    state_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    expire_at: Mapped[datetime] = mapped_column(UTCDateTime())


class WorkspaceSetting(Base):
    """What a workspace's admins chose; NULL means the operator's default."""

    __tablename__ = "workspace_settings"

    team_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    root_model: Mapped[str | None] = mapped_column(String(200))
    sub_model: Mapped[str | None] = mapped_column(String(200))
    max_parallel_calls: Mapped[int | None] = mapped_column(Integer)
    max_runs: Mapped[int | None] = mapped_column(Integer)
    daily_tokens: Mapped[int | None] = mapped_column(Integer)
    history_messages: Mapped[int | None] = mapped_column(Integer)
    history_days: Mapped[int | None] = mapped_column(Integer)
    updated_by: Mapped[str | None] = mapped_column(String(32))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class WorkspaceEnterprise(Base):
    """Which organisation a workspace belongs to, for org-wide uninstalls and purges."""

    __tablename__ = "workspace_enterprises"

    team_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    enterprise_id: Mapped[str] = mapped_column(String(32), index=True)


class Uninstall(Base):
    """A workspace (or organisation) that removed the app; its data goes at `purge_after`."""

    __tablename__ = "uninstalls"

    owner_id: Mapped[str] = mapped_column(String(32), primary_key=True)  # team or enterprise
    is_enterprise: Mapped[bool] = mapped_column(Boolean, default=False)
    uninstalled_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    purge_after: Mapped[datetime] = mapped_column(UTCDateTime())
