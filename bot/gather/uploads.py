"""Files shared in channels: fetch, download with the bot token, extract text, keep, acknowledge.

The bot token only ever goes to Slack's hosts or SLACK_API_URL's origin, redirects included.
An HTML page where a file should be is Slack's sign-in page: an authorization failure, never
content. Each file is handled once, whichever of `file_shared` or the file-share message
arrives first; a question asked meanwhile waits for it. A file kept is acknowledged with a
reaction; images are skipped without a word; a problem, an unsupported type included, gets
one reply naming the file, in its thread, once per file. `text_of` serves files read on
demand (bot.gather.scope_files) the same way.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.gather.files import FileRejected, extract_text, human_size, refused_by_name
from bot.slack import messages
from bot.slack.api import SlackPoster, error_code, explain, is_slack_host
from bot.storage import Store

logger = logging.getLogger("bot.uploads")

MAX_REDIRECTS = 3
MAX_RATE_LIMIT_WAITS = 3
MAX_RETRY_AFTER = 30.0
DOWNLOAD_TIMEOUT = aiohttp.ClientTimeout(total=120, sock_connect=15)
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# The quiet acknowledgement of a file kept.
ACK_REACTION = "white_check_mark"
GONE_ERRORS = frozenset({"file_not_found", "file_deleted"})


class Unreadable(Exception):
    """A file we will not use; `str()` is what the uploader is told. `image`: it is an
    image, which is no one's problem and gets no word."""

    def __init__(self, reason: str, *, image: bool = False) -> None:
        super().__init__(reason)
        self.image = image


def file_changed(file: dict[str, Any]) -> str | None:
    """Slack's marker of a file's last change ("" if never edited); None when `file` is a
    trimmed reference (as in some message payloads) that cannot tell."""
    if "created" not in file and "mimetype" not in file:
        return None
    return str(file.get("updated") or file.get("edit_timestamp") or "")


class Uploads:
    def __init__(
        self,
        *,
        client: AsyncWebClient,
        poster: SlackPoster,
        store: Store,
        session: aiohttp.ClientSession,
        api_url: str,
        max_file_bytes: int,
    ) -> None:
        self.client = client
        self.poster = poster
        self.store = store
        self.session = session
        self.api_url = api_url
        self.max_file_bytes = max_file_bytes
        self._inflight: dict[tuple[str, str], asyncio.Task[None]] = {}

    async def ingest(
        self,
        *,
        team_id: str,
        channel_id: str,
        file_id: str,
        user_id: str | None = None,
        message_ts: str | None = None,
        thread_ts: str | None = None,
    ) -> None:
        """Handle one shared file once; concurrent callers for the same file wait for it."""
        key = (channel_id, file_id)
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(
                self._ingest_once(team_id, channel_id, file_id, user_id, message_ts, thread_ts)
            )
            self._inflight[key] = task
            task.add_done_callback(lambda _: self._inflight.pop(key, None))
        await asyncio.shield(task)

    async def close(self) -> None:
        """Stop files still being read (at shutdown)."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _ingest_once(
        self,
        team_id: str,
        channel_id: str,
        file_id: str,
        user_id: str | None,
        message_ts: str | None,
        thread_ts: str | None,
    ) -> None:
        if not await self.store.claim_event(f"file:{channel_id}:{file_id}"):
            return
        try:
            file: dict[str, Any] = (await self.client.files_info(file=file_id))["file"]
        except SlackApiError as exc:
            await self.poster.tell_user(channel_id, user_id, explain("files.info", exc))
            return
        uploader = file.get("user") or user_id
        if uploader == (await self.poster.identity()).user_id:
            return
        reply_ts = thread_ts or message_ts or _share_thread(file, channel_id)
        name = str(file.get("name") or file.get("title") or file_id)
        size = int(file.get("size") or 0)
        try:
            text = await self.text_of(file, name, size)
        except Unreadable as refusal:
            if refusal.image:
                logger.info("skipped file %s in %s: an image", file_id, channel_id)
                return
            # One reply per file, however many channels it is shared to.
            if await self.store.claim_event(f"file-problem:{file_id}"):
                await self.poster.try_post(channel_id, str(refusal), thread_ts=reply_ts)
            return
        await self.store.save_file(
            team_id=team_id,
            channel_id=channel_id,
            file_id=file_id,
            name=name,
            mimetype=file.get("mimetype"),
            size=size,
            text=text,
            thread_ts=reply_ts,
            user_id=uploader,
            changed=file_changed(file),
        )
        logger.info("kept file %s in %s: %d chars", file_id, channel_id, len(text))
        share_ts = message_ts or _share_ts(file, channel_id)
        if share_ts:
            await self._acknowledge(channel_id, share_ts)

    async def _acknowledge(self, channel_id: str, ts: str) -> None:
        try:
            await self.client.reactions_add(channel=channel_id, timestamp=ts, name=ACK_REACTION)
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            # already_reacted, or no reactions:write: the file is kept all the same.
            logger.info("could not react to the file share in %s: %s", channel_id, exc)

    async def refresh(self, *, team_id: str, file_id: str) -> str:
        """Read again a kept file that Slack says changed, replacing its text in every channel
        of the workspace that has it; what was done: "updated", "deleted" (Slack no longer has
        it, or it can no longer be read: stale text is not kept), "kept" (Slack failed to
        answer) or "not kept" (no copy here)."""
        copies = await self.store.file_copies(team_id, file_id)
        if not copies:
            return "not kept"
        try:
            file: dict[str, Any] = (await self.client.files_info(file=file_id))["file"]
            name = str(file.get("name") or file.get("title") or file_id)
            size = int(file.get("size") or 0)
            text = await self.text_of(file, name, size)
        except SlackApiError as exc:
            if error_code(exc) not in GONE_ERRORS:  # Slack's trouble, not the file's: keep
                logger.warning("changed file %s not read again: %s", file_id, error_code(exc))
                return "kept"
            await self.store.delete_file(team_id, file_id)
            return "deleted"
        except Unreadable:
            logger.info("changed file %s can no longer be read; its kept text is deleted", file_id)
            await self.store.delete_file(team_id, file_id)
            return "deleted"
        for copy in copies:
            await self.store.save_file(
                team_id=team_id,
                channel_id=copy.channel_id,
                file_id=file_id,
                name=name,
                mimetype=file.get("mimetype"),
                size=size,
                text=text,
                thread_ts=copy.thread_ts,
                user_id=copy.user_id,
            )
        logger.info("changed file %s read again: %d chars", file_id, len(text))
        return "updated"

    async def text_of(self, file: dict[str, Any], name: str, size: int) -> str:
        """The text of `file` (a files.info object): size, host and HTML checks, then
        extraction; `Unreadable` says why not. A type refused by name is not downloaded."""
        refusal = refused_by_name(name, file.get("mimetype"))
        if refusal is not None:
            raise Unreadable(messages.file_rejected(refusal.reason), image=refusal.image)
        if size > self.max_file_bytes:
            raise Unreadable(
                messages.file_too_large(name, human_size(size), human_size(self.max_file_bytes))
            )
        url = file.get("url_private_download") or file.get("url_private")
        if not url:
            raise Unreadable(messages.file_download_failed(name, "Slack gave no download address"))
        mimetype = str(file.get("mimetype") or "")
        data = await self.download(url, name, expect_html=mimetype == "text/html")
        try:
            # PDF and Office parsing is CPU work: keep it off the loop that acks Slack.
            return await asyncio.to_thread(
                extract_text, name, mimetype or None, data, max_bytes=self.max_file_bytes
            )
        except FileRejected as exc:
            raise Unreadable(messages.file_rejected(exc.reason), image=exc.image) from None

    async def download(self, url: str, name: str, *, expect_html: bool = False) -> bytes:
        """The file's bytes, fetched with the bot token from Slack only; `Unreadable` otherwise."""
        token = self.client.token
        # Each round is one redirect followed or one 429 waited out.
        for _ in range(MAX_REDIRECTS + MAX_RATE_LIMIT_WAITS + 1):
            if not is_slack_host(url, self.api_url):
                logger.warning("refused to send the bot token to %s", urlsplit(url).hostname)
                raise Unreadable(messages.file_host_refused(name, urlsplit(url).hostname or url))
            try:
                async with self.session.get(
                    url,
                    headers={"Authorization": f"Bearer {token}"},
                    allow_redirects=False,
                    timeout=DOWNLOAD_TIMEOUT,
                ) as response:
                    if response.status in _REDIRECTS and "Location" in response.headers:
                        url = urljoin(url, response.headers["Location"])
                        continue
                    if response.status == 429:
                        await asyncio.sleep(_retry_after(response.headers.get("Retry-After")))
                        continue
                    if response.status != 200:
                        raise Unreadable(
                            messages.file_download_failed(name, f"HTTP {response.status}")
                        )
                    data = await self._read_capped(response, name)
                    content_type = response.headers.get("Content-Type", "").lower()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise Unreadable(messages.file_download_failed(name, type(exc).__name__)) from None
            if not expect_html and _looks_like_html(content_type, data):
                raise Unreadable(messages.file_auth_failed(name))
            return data
        raise Unreadable(messages.file_download_failed(name, "too many redirects or rate limits"))

    async def _read_capped(self, response: aiohttp.ClientResponse, name: str) -> bytes:
        chunks: list[bytes] = []
        total = 0
        async for chunk in response.content.iter_chunked(65536):
            total += len(chunk)
            if total > self.max_file_bytes:
                raise Unreadable(
                    messages.file_too_large(
                        name, f"over {human_size(total)}", human_size(self.max_file_bytes)
                    )
                )
            chunks.append(chunk)
        return b"".join(chunks)


def _retry_after(header: str | None) -> float:
    try:
        return min(max(float(header or 1), 0.0), MAX_RETRY_AFTER)
    except ValueError:
        return 1.0


def _looks_like_html(content_type: str, data: bytes) -> bool:
    if content_type.startswith("text/html"):
        return True
    head = data[:512].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html"))


def _share_ts(file: dict[str, Any], channel_id: str) -> str | None:
    """The ts of the message that shared `file` in `channel_id`."""
    shares = file.get("shares") or {}
    for visibility in ("public", "private"):
        for share in (shares.get(visibility) or {}).get(channel_id) or []:
            return str(share["ts"])
    return None


def shared_in(file: dict[str, Any], channel_id: str) -> bool:
    """Whether a files.info object says the file is shared in `channel_id`."""
    shares = file.get("shares") or {}
    if any(channel_id in (shares.get(v) or {}) for v in ("public", "private")):
        return True
    return any(channel_id in (file.get(k) or []) for k in ("channels", "groups", "ims"))


def _share_thread(file: dict[str, Any], channel_id: str) -> str | None:
    """The thread to answer in: the share's thread, else the share message itself."""
    shares = file.get("shares") or {}
    for visibility in ("public", "private"):
        for share in (shares.get(visibility) or {}).get(channel_id) or []:
            return str(share.get("thread_ts") or share["ts"])
    return None
