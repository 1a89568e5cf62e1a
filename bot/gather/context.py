"""Gathering what a question is asked over: a channel's history or a thread, plus their files.

Messages are fetched with cursor pagination (bounded by a message count and an age), rendered
oldest first as `[m12] [2026-11-26 14:03] Alice: text` with mentions and links made readable,
and returned with each stored file's text (headed `[f2]`) as the engine's list-of-documents
context. The short references are what an answer cites; `GatheredContext.links` maps each to
its permalink, and `left_out` says which limits kept history out.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.gather.gathered import GatheredContext, Source, file_link, format_ts, message_link
from bot.gather.scope_files import FileReading, ScopeFiles, file_refs
from bot.slack import messages as texts
from bot.slack.api import BotIdentity
from bot.storage import FileRecord, RunRecord, Store

PAGE_SIZE = 200
# Added to the question the root model sees, so an answer says what it rests on.
CITE_INSTRUCTION = (
    "\n\n(In your final answer, cite the messages and files you rely on by the references "
    "they carry in the context, in square brackets, such as [m12] or [f2].)"
)
USER_CACHE_SECONDS = 3600.0
SKIPPED_SUBTYPES = frozenset({"channel_join", "channel_leave", "group_join", "group_leave"})

_LINK = re.compile(r"<([^<>|]+)(?:\|([^<>]*))?>")


class UserDirectory:
    """Display names by user id, from users.info, cached for an hour."""

    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client
        self._names: dict[str, tuple[str, float]] = {}

    async def name(self, user_id: str) -> str:
        cached = self._names.get(user_id)
        if cached and time.monotonic() - cached[1] < USER_CACHE_SECONDS:
            return cached[0]
        try:
            user = (await self.client.users_info(user=user_id))["user"]
        except SlackApiError:
            return user_id  # a missing users:read scope or a deleted user: the id still reads
        profile = user.get("profile") or {}
        name = (
            profile.get("display_name")
            or profile.get("real_name")
            or user.get("real_name")
            or user.get("name")
            or user_id
        )
        self._names[user_id] = (name, time.monotonic())
        return str(name)


class ContextGatherer:
    def __init__(
        self,
        *,
        client: AsyncWebClient,
        store: Store,
        users: UserDirectory,
        history_messages: int,
        history_days: int,
        scope_files: ScopeFiles | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.users = users
        self.history_messages = history_messages
        self.history_days = history_days
        # None: only the files whose upload the app saw (kept in the store).
        self.scope_files = scope_files

    async def channel(
        self,
        team_id: str,
        channel_id: str,
        *,
        bot: BotIdentity,
        exclude_ts: Iterable[str] = (),
        pane: tuple[str, str] | None = None,
    ) -> GatheredContext:
        """The channel's recent history (with its threads' replies) and its files.

        `pane`: the assistant pane thread (channel, ts) the question was asked in, whose
        conversation so far follows the channel, so a follow-up sees the earlier answers.
        """
        skip = tuple(exclude_ts)
        gathered = await self._channel(team_id, channel_id, bot=bot, exclude_ts=skip)
        if pane is not None:
            conversation = await self.thread(
                team_id, *pane, exclude_ts=skip, bot=bot, after=gathered
            )
            if conversation.messages > 1:  # more than the pane's opening message
                gathered.extend(conversation)
        return gathered

    async def _channel(
        self, team_id: str, channel_id: str, *, bot: BotIdentity, exclude_ts: Iterable[str]
    ) -> GatheredContext:
        skip = set(exclude_ts)
        oldest = time.time() - self.history_days * 86400 if self.history_days else 0
        budget = self.history_messages
        capped = False
        roots: list[dict[str, Any]] = []
        async for message in self._pages(
            self.client.conversations_history, channel=channel_id, oldest=f"{oldest:.6f}"
        ):
            if budget <= 0:
                capped = True
                break
            if _keep(message, bot, skip):
                roots.append(message)
                budget -= 1
        # Replies: newest threads first, while the message budget lasts.
        replies: dict[str, list[dict[str, Any]]] = {}
        for root in roots:
            if int(root.get("reply_count") or 0) and budget <= 0:
                capped = True
                break
            if int(root.get("reply_count") or 0) == 0:
                continue
            kept = []
            async for reply in self._pages(
                self.client.conversations_replies, channel=channel_id, ts=root["ts"]
            ):
                if reply["ts"] == root["ts"] or not _keep(reply, bot, skip):
                    continue
                if budget <= 0:
                    capped = True
                    break
                kept.append(reply)
                budget -= 1
            replies[root["ts"]] = kept
        roots.reverse()
        gathered = GatheredContext()
        lines = []
        for root in roots:
            lines.append(await self._cite(gathered, root, channel_id, bot))
            for reply in replies.get(root["ts"], []):
                lines.append("    ↳ " + await self._cite(gathered, reply, channel_id, bot))
        count = len(roots) + sum(len(r) for r in replies.values())
        if capped:
            gathered.left_out.append(texts.left_out_capped(self.history_messages))
        elif self.history_days and await self._older_exists(channel_id, oldest):
            gathered.left_out.append(texts.left_out_older(self.history_days))
        if count:
            name = await self._channel_name(channel_id)
            span = f"{format_ts(roots[0]['ts'])} to {format_ts(roots[-1]['ts'])}"
            header = f"# Slack channel #{name}: {count} messages, {span} (times UTC)\n\n"
            self._add(gathered, "channel_history", channel_id, count, header + "\n".join(lines))
            gathered.messages = count
        read = roots + [reply for thread in replies.values() for reply in thread]
        kept_files = await self.store.channel_files(team_id, channel_id)
        await self._add_scope_files(gathered, team_id, channel_id, read, kept_files, bot)
        return gathered

    async def thread(
        self,
        team_id: str,
        channel_id: str,
        thread_ts: str,
        *,
        exclude_ts: Iterable[str] = (),
        bot: BotIdentity | None = None,
        skip_bot: bool = False,
        after: GatheredContext | None = None,
    ) -> GatheredContext:
        """A thread's messages, oldest first, and the files shared in it.

        The bot's own replies stay in unless `skip_bot` (a follow-up reads the earlier
        answers from the store instead, without the status lines). With `after`, the
        references continue its own, so the two can be joined (`GatheredContext.extend`).
        """
        skip = set(exclude_ts)
        kept: list[dict[str, Any]] = []
        gathered = GatheredContext()
        if after is not None:
            gathered.cited, gathered.files_cited = after.cited, after.files_cited
        async for message in self._pages(
            self.client.conversations_replies, channel=channel_id, ts=thread_ts
        ):
            if len(kept) >= self.history_messages:
                gathered.left_out.append(texts.left_out_capped(self.history_messages))
                break
            if _keep(message, bot if skip_bot else None, skip):
                kept.append(message)
        if kept:
            lines = [await self._cite(gathered, m, channel_id, bot) for m in kept]
            header = f"# Slack thread: {len(kept)} messages (times UTC)\n\n"
            self._add(gathered, "thread", thread_ts, len(kept), header + "\n".join(lines))
            gathered.messages = len(kept)
        files = await self.store.thread_files(team_id, channel_id, thread_ts)
        await self._add_scope_files(gathered, team_id, channel_id, kept, files, bot)
        return gathered

    def add_earlier_answers(self, gathered: GatheredContext, runs: list[RunRecord]) -> None:
        """A follow-up's context: the thread's earlier questions and answers, as a document."""
        done = [run for run in runs if run.answer]
        if not done:
            return
        parts = [f"Q (asked {format_ts(f'{r.created_at.timestamp():.6f}')}): {r.question}\n"
                 f"A: {r.answer}" for r in done]  # fmt: skip
        header = f"# Earlier questions and answers in this thread: {len(done)}\n\n"
        self._add(gathered, "earlier_answers", str(done[0].id), len(done),
                  header + "\n\n".join(parts))  # fmt: skip

    async def _cite(
        self,
        gathered: GatheredContext,
        message: dict[str, Any],
        channel_id: str,
        bot: BotIdentity | None,
    ) -> str:
        """The message rendered with its reference, which is linked to its permalink."""
        gathered.cited += 1
        ref = f"m{gathered.cited}"
        ts = str(message["ts"])
        gathered.links[ref] = message_link(
            bot.url if bot else None, channel_id, ts, message.get("thread_ts")
        )
        if gathered.first_ts is None or float(ts) < float(gathered.first_ts):
            gathered.first_ts = ts
        if gathered.last_ts is None or float(ts) > float(gathered.last_ts):
            gathered.last_ts = ts
        return f"[{ref}] " + await self.render(message)

    async def _older_exists(self, channel_id: str, oldest: float) -> bool:
        """Whether the channel has messages older than the age limit (one small request)."""
        try:
            reply = await self.client.conversations_history(
                channel=channel_id, latest=f"{oldest:.6f}", limit=1
            )
        except SlackApiError:
            return False
        return bool(reply.get("messages"))

    async def render(self, message: dict[str, Any]) -> str:
        author = await self._author(message)
        text = await self.readable(message.get("text") or "")
        names = [f["name"] for f in message.get("files") or [] if f.get("name")]
        if names:
            text += "".join(f" [file: {n}]" for n in names)
        return f"[{format_ts(message['ts'])}] {author}: {text}"

    async def readable(self, text: str) -> str:
        """Slack's markup made plain: <@U1> → @Alice, <#C1|general> → #general, links."""
        parts: list[str] = []
        last = 0
        for match in _LINK.finditer(text):
            parts.append(text[last : match.start()])
            target, label = match.group(1), match.group(2)
            if target.startswith("@"):
                name = label.lstrip("@") if label else await self.users.name(target[1:])
                parts.append("@" + name)
            elif target.startswith("#"):
                parts.append("#" + (label or target[1:]))
            elif target.startswith("!"):  # <!here>, <!subteam^S1|@team>
                parts.append("@" + (label.lstrip("@") if label else target[1:].split("^")[0]))
            else:
                parts.append(f"{label} ({target})" if label and label != target else target)
            last = match.end()
        parts.append(text[last:])
        return html.unescape("".join(parts))

    async def _author(self, message: dict[str, Any]) -> str:
        if message.get("user"):
            return await self.users.name(message["user"])
        profile = message.get("bot_profile") or {}
        return str(message.get("username") or profile.get("name") or "a bot")

    async def _channel_name(self, channel_id: str) -> str:
        try:
            info = await self.client.conversations_info(channel=channel_id)
        except SlackApiError:
            return channel_id
        return str(info["channel"].get("name") or channel_id)

    async def _add_scope_files(
        self,
        gathered: GatheredContext,
        team_id: str,
        channel_id: str,
        read: list[dict[str, Any]],
        kept: list[FileRecord],
        bot: BotIdentity | None,
    ) -> None:
        """The files of the messages read (on demand) and those kept for the scope."""
        if self.scope_files is None:
            await self._add_files(gathered, kept, bot)
            return
        reading: FileReading = await self.scope_files.read(
            team_id, channel_id, file_refs(read), kept
        )
        # Oldest first, as the messages are.
        await self._add_files(gathered, sorted(reading.records, key=lambda r: r.created_at), bot)
        gathered.files_not_text = reading.not_text
        gathered.files_over_cap = reading.over_cap
        gathered.files_unreadable = reading.unreadable

    async def _add_files(
        self, gathered: GatheredContext, files: list[FileRecord], bot: BotIdentity | None
    ) -> None:
        for record in files:
            who = await self.users.name(record.user_id) if record.user_id else "someone"
            when = record.created_at.strftime("%Y-%m-%d") if record.created_at else "?"
            gathered.files_cited += 1
            ref = f"f{gathered.files_cited}"
            gathered.links[ref] = file_link(bot.url if bot else None, record)
            header = f"# File: {record.name} (shared by {who} on {when}) [{ref}]\n\n"
            self._add(gathered, "file", record.file_id, 1, header + record.text)
            gathered.files += 1

    @staticmethod
    def _add(gathered: GatheredContext, kind: str, ref: str, items: int, document: str) -> None:
        gathered.documents.append(document)
        gathered.sources.append(Source(kind=kind, ref=ref, items=items, chars=len(document)))

    @staticmethod
    async def _pages(method: Any, **params: Any) -> AsyncIterator[dict[str, Any]]:
        cursor: str | None = None
        while True:
            reply = await method(limit=PAGE_SIZE, cursor=cursor, **params)
            for message in reply.get("messages") or []:
                yield message
            cursor = (reply.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor or not reply.get("has_more", True):
                return


def _keep(message: dict[str, Any], bot: BotIdentity | None, skip: set[str]) -> bool:
    """Leave out joins, `skip`, and the bot's own posts (questions, progress, answers) when
    `bot` is given."""
    if message.get("ts") in skip or message.get("subtype") in SKIPPED_SUBTYPES:
        return False
    if bot is None:
        return True
    if message.get("user") == bot.user_id:
        return False
    return not (bot.bot_id and message.get("bot_id") == bot.bot_id)
