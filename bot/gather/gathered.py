"""What gathering yields: the engine's documents, the sources read, and the links that let an
answer's citations (`[m12]`, `[f2]`) point at the messages and files they name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from bot.slack import messages as texts
from bot.storage import FileRecord


@dataclass(frozen=True)
class Source:
    kind: str  # "channel_history" | "thread" | "file"
    ref: str
    items: int
    chars: int


@dataclass
class GatheredContext:
    documents: list[str] = field(default_factory=list)
    sources: list[Source] = field(default_factory=list)
    messages: int = 0
    files: int = 0
    # Files in the scope not read: images and such, over the per-question caps, unreadable.
    files_not_text: int = 0
    files_over_cap: int = 0
    files_unreadable: list[str] = field(default_factory=list)

    links: dict[str, str] = field(default_factory=dict)  # "m12" / "f2" → permalink
    first_ts: str | None = None
    last_ts: str | None = None
    left_out: list[str] = field(default_factory=list)  # limits that kept history out
    cited: int = 0  # messages given a reference so far
    files_cited: int = 0  # files given a reference so far

    def extend(self, other: GatheredContext) -> None:
        """Add `other`'s documents and counts after this one's; `other` was gathered with
        `after=self`, so its references continue this one's."""
        self.documents += other.documents
        self.sources += other.sources
        self.messages += other.messages
        self.files += other.files
        self.files_not_text += other.files_not_text
        self.files_over_cap += other.files_over_cap
        self.files_unreadable += other.files_unreadable
        self.links.update(other.links)
        self.left_out += other.left_out
        self.cited, self.files_cited = other.cited, other.files_cited
        for ts in (other.first_ts, other.last_ts):
            if ts is not None and (self.first_ts is None or float(ts) < float(self.first_ts)):
                self.first_ts = ts
            if ts is not None and (self.last_ts is None or float(ts) > float(self.last_ts)):
                self.last_ts = ts

    def summary(self) -> str:
        """ "397 messages, 1 Sep–30 Nov, 3 files; older history not read"."""
        files_left_out = texts.files_left_out(
            not_text=self.files_not_text,
            over_cap=self.files_over_cap,
            unreadable=self.files_unreadable,
        )
        return texts.read_summary(
            self.messages,
            _day(self.first_ts) if self.first_ts else None,
            _day(self.last_ts) if self.last_ts else None,
            self.files,
            self.left_out + ([files_left_out] if files_left_out else []),
        )

    @property
    def chars(self) -> int:
        return sum(len(d) for d in self.documents)

    @property
    def empty(self) -> bool:
        return self.messages == 0 and self.files == 0


def format_ts(ts: str) -> str:
    return datetime.fromtimestamp(float(ts), tz=UTC).strftime("%Y-%m-%d %H:%M")


def _day(ts: str) -> str:
    day = datetime.fromtimestamp(float(ts), tz=UTC)
    return f"{day.day} {day.strftime('%b')}"


def message_link(base: str | None, channel_id: str, ts: str, thread_ts: str | None) -> str:
    """A message's permalink, built as Slack builds them (no API call per citation)."""
    root = (base or "https://slack.com/").rstrip("/") + "/"
    link = f"{root}archives/{channel_id}/p{ts.replace('.', '')}"
    if thread_ts and thread_ts != ts:
        link += f"?thread_ts={thread_ts}&cid={channel_id}"
    return link


def file_link(base: str | None, file: FileRecord) -> str:
    root = (base or "https://slack.com/").rstrip("/") + "/"
    owner = f"{file.user_id}/" if file.user_id else ""
    return f"{root}files/{owner}{file.file_id}"
