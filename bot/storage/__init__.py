"""The bot's storage: runs, their iterations, channel files and handled events, kept through
SQLAlchemy's async ORM in a database that the Alembic migrations in `migrations/` define, and
the encryption of the Slack tokens it stores (`_crypto`). `Store` is one class built from a
mixin per concern: runs (`_store`), the shared run queue (`_queue`), files (`_files`), usage
(`_usage`), retention (`_lifecycle`), surfaces (`_surfaces`).

The bottom room: it imports nothing else of `bot`, and every room above may import it.
"""

from __future__ import annotations

from bot.storage._engine import DEFAULT_DATABASE_URL
from bot.storage._lifecycle import Purged
from bot.storage._records import (
    CONTEXT_KINDS,
    FEEDBACK_VALUES,
    FINAL_STATUSES,
    RUN_STATUSES,
    SCOPES,
    TRIGGERS,
    Fence,
    FileRecord,
    IterationRecord,
    RunRecord,
)
from bot.storage._surfaces import PaneContext, ProblemRecord, Store

__all__ = [
    "CONTEXT_KINDS",
    "DEFAULT_DATABASE_URL",
    "FEEDBACK_VALUES",
    "FINAL_STATUSES",
    "RUN_STATUSES",
    "SCOPES",
    "TRIGGERS",
    "Fence",
    "FileRecord",
    "IterationRecord",
    "PaneContext",
    "ProblemRecord",
    "Purged",
    "RunRecord",
    "Store",
]
