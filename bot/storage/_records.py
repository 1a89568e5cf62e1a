"""The immutable records the Store hands out, so no ORM object (or its session) leaks out."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bot.storage._models import File, Iteration, Run

RUN_STATUSES = ("queued", "running", "finished", "failed", "interrupted", "stopped")
FINAL_STATUSES = ("finished", "failed", "interrupted", "stopped")
TRIGGERS = ("command", "mention", "assistant", "dm")
CONTEXT_KINDS = ("channel_history", "thread", "file", "earlier_answers")
SCOPES = ("channel", "thread")
FEEDBACK_VALUES = ("up", "down")


@dataclass(frozen=True, slots=True)
class Fence:
    """Who holds a run and since which claim: a status write naming an owner and epoch the
    run no longer has changes nothing (the writer lost the run)."""

    owner: str | None
    epoch: int


@dataclass(frozen=True, slots=True)
class RunRecord:
    id: int
    team_id: str
    channel_id: str
    thread_ts: str | None
    user_id: str
    question: str
    status: str
    answer: str | None
    error: str | None
    root_model: str
    sub_model: str
    trigger: str
    iterations: int
    subcalls: int
    input_tokens: int
    output_tokens: int
    seconds: float
    stopped_by: str | None
    created_at: datetime
    finished_at: datetime | None
    scope: str | None = None
    scope_ts: str | None = None
    error_kind: str | None = None
    status_ts: str | None = None
    owner: str | None = None
    exclude_ts: str | None = None
    epoch: int = 0
    lease_expires_at: datetime | None = None
    cost_usd: float | None = None
    cached_input_tokens: int = 0

    @property
    def fence(self) -> Fence:
        """What a status write by this run's owner names (its owner and epoch)."""
        return Fence(self.owner, self.epoch)

    @classmethod
    def from_row(cls, run: Run) -> RunRecord:
        return cls(
            id=run.id,
            team_id=run.team_id,
            channel_id=run.channel_id,
            thread_ts=run.thread_ts,
            user_id=run.user_id,
            question=run.question,
            status=run.status,
            answer=run.answer,
            error=run.error,
            root_model=run.root_model,
            sub_model=run.sub_model,
            trigger=run.trigger,
            iterations=run.iterations,
            subcalls=run.subcalls,
            input_tokens=run.input_tokens,
            output_tokens=run.output_tokens,
            seconds=run.seconds,
            stopped_by=run.stopped_by,
            created_at=run.created_at,
            finished_at=run.finished_at,
            scope=run.scope,
            scope_ts=run.scope_ts,
            error_kind=run.error_kind,
            status_ts=run.status_ts,
            owner=run.owner,
            exclude_ts=run.exclude_ts,
            epoch=run.epoch or 0,
            lease_expires_at=run.lease_expires_at,
            cost_usd=run.cost_usd,
            cached_input_tokens=run.cached_input_tokens or 0,
        )


@dataclass(frozen=True, slots=True)
class IterationRecord:
    run_id: int
    iteration: int
    root_reply: str
    code: str
    output: str
    subcalls: int
    input_tokens: int
    output_tokens: int
    seconds: float
    created_at: datetime
    cost_usd: float | None = None

    @classmethod
    def from_row(cls, row: Iteration) -> IterationRecord:
        return cls(
            run_id=row.run_id,
            iteration=row.iteration,
            root_reply=row.root_reply,
            code=row.code,
            output=row.output,
            subcalls=row.subcalls,
            input_tokens=row.input_tokens,
            output_tokens=row.output_tokens,
            seconds=row.seconds,
            created_at=row.created_at,
            cost_usd=row.cost_usd,
        )


@dataclass(frozen=True, slots=True)
class FileRecord:
    file_id: str
    channel_id: str
    thread_ts: str | None
    name: str
    mimetype: str | None
    size: int
    text: str
    user_id: str | None
    created_at: datetime
    changed: str | None = None  # Slack's last-change marker when it was read; None: unknown

    @classmethod
    def from_row(cls, row: File) -> FileRecord:
        return cls(
            file_id=row.file_id,
            channel_id=row.channel_id,
            thread_ts=row.thread_ts,
            name=row.name,
            mimetype=row.mimetype,
            size=row.size,
            text=row.text,
            user_id=row.user_id,
            created_at=row.created_at,
            changed=row.changed,
        )
