"""Files in a question's scope, read whether or not the app saw their upload.

The messages a question reads carry `files` arrays; each file not already kept (or changed
since it was kept) is fetched on demand with `files.info` and downloaded with the same host
and HTML checks as an upload (bot.gather.uploads), then kept by file id and last change. Only files
shared in the channel being read are used. A question reads at most `max_files` files and
`max_bytes` of them; images are skipped without a call and counted, files of a type not
read are named (without a download when the name tells), so the run can say what it left out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.gather.files import refused_by_name
from bot.gather.uploads import Unreadable, Uploads, file_changed, shared_in
from bot.storage import FileRecord, Store

logger = logging.getLogger("bot.scope_files")

_SKIPPED_MODES = frozenset({"tombstone", "hidden_by_limit", "external"})
DOWNLOADS_AT_ONCE = 4


@dataclass(frozen=True)
class FileRef:
    """A file a message in the scope carries, as the message shows it."""

    file_id: str
    name: str
    mimetype: str | None
    changed: str | None  # None: the message's copy cannot tell
    thread_ts: str  # the thread it was shared in (its own message's ts at the top level)
    mode: str | None = None


def file_refs(messages: Iterable[dict[str, Any]]) -> list[FileRef]:
    """Every file the messages carry, newest message first, each file once."""
    refs: dict[str, FileRef] = {}
    for message in sorted(messages, key=lambda m: float(m["ts"]), reverse=True):
        for file in message.get("files") or []:
            file_id = file.get("id")
            if not isinstance(file_id, str) or not file_id or file_id in refs:
                continue
            refs[file_id] = FileRef(
                file_id=file_id,
                name=str(file.get("name") or file.get("title") or file_id),
                mimetype=file.get("mimetype"),
                changed=file_changed(file),
                thread_ts=str(message.get("thread_ts") or message["ts"]),
                mode=file.get("mode"),
            )
    return list(refs.values())


@dataclass
class FileReading:
    """The files a question reads, and what it left out."""

    records: list[FileRecord] = field(default_factory=list)
    fetched: int = 0  # read on demand for this question
    not_text: int = 0  # images (the name is older than the rule: only images are counted)
    over_cap: int = 0
    unreadable: list[str] = field(default_factory=list)


class ScopeFiles:
    def __init__(
        self,
        *,
        client: AsyncWebClient,
        store: Store,
        uploads: Uploads,
        max_files: int,
        max_bytes: int,
    ) -> None:
        self.client = client
        self.store = store
        self.uploads = uploads
        self.max_files = max_files
        self.max_bytes = max_bytes

    async def read(
        self, team_id: str, channel_id: str, refs: list[FileRef], kept: list[FileRecord]
    ) -> FileReading:
        """The files of `refs` (fetched when not in `kept` or changed) and the rest of `kept`,
        newest first, within the caps. Lookups run one at a time (each decides what room is
        left), downloads a few at once."""
        reading = FileReading()
        by_id = {record.file_id: record for record in kept}
        chosen: list[FileRecord | asyncio.Task[FileRecord | None]] = []
        used = lookups = 0
        gate = asyncio.Semaphore(DOWNLOADS_AT_ONCE)
        async with asyncio.TaskGroup() as downloads:
            for ref in refs:
                if ref.mode in _SKIPPED_MODES:  # deleted, or beyond the plan's history
                    continue
                refusal = refused_by_name(ref.name, ref.mimetype)
                if refusal is not None:
                    _count_refused(reading, ref.name, image=refusal.image)
                    continue
                record = by_id.pop(ref.file_id, None)
                if record is not None and not _stale(record, ref):
                    used = self._take(reading, chosen, record, used)
                    continue
                # Lookups are bounded too: references that lead nowhere cost a call each.
                if len(chosen) >= self.max_files or lookups >= 2 * self.max_files:
                    reading.over_cap += 1
                    continue
                lookups += 1
                file = await self._look_up(channel_id, ref, reading)
                if file is None:
                    continue
                size = int(file.get("size") or 0)
                if used + size > self.max_bytes:
                    reading.over_cap += 1
                    continue
                used += size
                chosen.append(
                    downloads.create_task(
                        self._download(team_id, channel_id, ref, file, reading, gate)
                    )
                )
            for record in sorted(by_id.values(), key=lambda r: r.created_at, reverse=True):
                used = self._take(reading, chosen, record, used)
        for item in chosen:
            found = item.result() if isinstance(item, asyncio.Task) else item
            if found is not None:
                reading.records.append(found)
        return reading

    def _take(
        self,
        reading: FileReading,
        chosen: list[FileRecord | asyncio.Task[FileRecord | None]],
        record: FileRecord,
        used: int,
    ) -> int:
        if len(chosen) >= self.max_files or used + record.size > self.max_bytes:
            reading.over_cap += 1
            return used
        chosen.append(record)
        return used + record.size

    async def _look_up(
        self, channel_id: str, ref: FileRef, reading: FileReading
    ) -> dict[str, Any] | None:
        """The file's files.info object, if it is a text file shared in `channel_id`."""
        try:
            file: dict[str, Any] = (await self.client.files_info(file=ref.file_id))["file"]
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            logger.info("files.info %s failed: %s", ref.file_id, exc)
            reading.unreadable.append(ref.name)
            return None
        if not shared_in(file, channel_id):
            # A message here pointing at a file shared elsewhere: never read it.
            logger.warning("file %s is not shared in %s: not read", ref.file_id, channel_id)
            return None
        name = str(file.get("name") or file.get("title") or ref.name)
        if file.get("mode") in _SKIPPED_MODES:
            return None
        refusal = refused_by_name(name, file.get("mimetype"))
        if refusal is not None:
            _count_refused(reading, name, image=refusal.image)
            return None
        return file

    async def _download(
        self,
        team_id: str,
        channel_id: str,
        ref: FileRef,
        file: dict[str, Any],
        reading: FileReading,
        gate: asyncio.Semaphore,
    ) -> FileRecord | None:
        name = str(file.get("name") or file.get("title") or ref.name)
        size = int(file.get("size") or 0)
        try:
            async with gate:
                text = await self.uploads.text_of(file, name, size)
        except Unreadable as refusal:
            if not refusal.image:
                logger.info("file %s unreadable: %s", ref.file_id, refusal)
            _count_refused(reading, name, image=refusal.image)
            return None
        changed = file_changed(file)
        await self.store.save_file(
            team_id=team_id,
            channel_id=channel_id,
            file_id=ref.file_id,
            name=name,
            mimetype=file.get("mimetype"),
            size=size,
            text=text,
            thread_ts=ref.thread_ts,
            user_id=file.get("user"),
            changed=changed,
        )
        reading.fetched += 1
        logger.info("read file %s in %s on demand: %d chars", ref.file_id, channel_id, len(text))
        created = file.get("created")
        return FileRecord(
            file_id=ref.file_id,
            channel_id=channel_id,
            thread_ts=ref.thread_ts,
            name=name,
            mimetype=file.get("mimetype"),
            size=size,
            text=text,
            user_id=file.get("user"),
            created_at=datetime.fromtimestamp(float(created), UTC) if created else _now(),
            changed=changed,
        )


def _count_refused(reading: FileReading, name: str, *, image: bool) -> None:
    if image:
        reading.not_text += 1
    else:
        reading.unreadable.append(name)


def _stale(record: FileRecord, ref: FileRef) -> bool:
    """Whether the message shows a change since the file was kept."""
    return ref.changed is not None and ref.changed != (record.changed or "")


def _now() -> datetime:
    return datetime.now(UTC)
