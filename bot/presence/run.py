"""A run's presence in its thread: one status message edited in place, then the answer.

`RunPresence` owns everything a run shows in Slack. Engine events mark the status dirty; a
writer edits the message with chat.update at most once per `edit_interval` (chat.update is a
Tier 3 method, about 50 a minute per workspace), coalescing whatever came in between. A
ticker keeps the elapsed time honest and says when the model has been silent. When the run
ends the status collapses to a one-line summary with buttons, and the answer is posted (or
streamed where the workspace supports it) in parts under Slack's block limits: a run posts
the status and the answer, plus a bounded number of continuation parts and, for an answer
longer still, one file holding the rest, nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.presence import blocks, render
from bot.presence.answer_parts import RenderedPart, render_answer_async
from bot.presence.pacer import ChannelPacer
from bot.slack import messages
from bot.slack.api import error_code
from bot.slack.files import UPLOAD_FAILURES, upload_text_file
from rlm import (
    CodeExecuted,
    Event,
    IterationFinished,
    IterationStarted,
    RootReplied,
    SubcallProgress,
)

logger = logging.getLogger("bot.presence")

# Slack's errors meaning "this workspace cannot stream": post the answer whole instead.
NO_STREAMING = frozenset(
    {"unknown_method", "not_supported", "method_not_supported_for_channel_type", "not_allowed"}
)
STEPS_SHOWN = 6  # the latest steps the live status lists
STREAM_PIECE = 1500  # characters per chat.appendStream


@dataclass
class _Step:
    iteration: int
    plan: str = ""
    done: bool = False
    seconds: float = 0.0
    subcalls: int = 0
    map_done: int = 0
    map_total: int = 0
    failed: int = 0
    refused: int = 0
    refused_by: str | None = None
    error: bool = False

    def line(self) -> str:
        detail: list[str] = []
        if self.map_total > 1:
            detail.append(render.bar(self.map_done, self.map_total))
        other = self.failed - self.refused
        if other > 0:
            detail.append(messages.map_failures(other))
        if self.refused and self.refused_by:
            detail.append(messages.map_refused(self.refused, self.refused_by))
        if self.error:
            detail.append(messages.code_error())
        if self.done:
            detail.append(f"{self.seconds:.1f} s")
        return messages.step_line(self.iteration, self.plan, " · ".join(detail))


class StreamSupport:
    """Whether chat.startStream works here; learned once, on the first answer."""

    def __init__(self) -> None:
        self.available: bool | None = None


class RunPresence:
    def __init__(
        self,
        *,
        client: AsyncWebClient,
        pacer: ChannelPacer,
        edit_pacer: ChannelPacer,
        channel: str,
        thread_ts: str,
        run_id: int,
        team_id: str,
        asker: str,
        edit_interval: float,
        streams: StreamSupport,
        wait_notice: float = 10.0,
        tick: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        on_status_posted: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.client = client
        self.pacer = pacer
        self.edit_pacer = edit_pacer
        self.channel = channel
        self.thread_ts = thread_ts
        self.run_id = run_id
        self.team_id = team_id
        self.asker = asker
        self.edit_interval = edit_interval
        self.streams = streams
        self.wait_notice = wait_notice
        self.tick = tick
        self.clock = clock
        self.on_status_posted = on_status_posted
        self.status_ts: str | None = None
        self.posts = 0  # messages this run posted in its thread
        self.edits = 0
        self._started = clock()
        self._last_event = clock()
        self._waiting_model = False
        self._head = messages.STARTING
        self._read = ""
        self._steps: dict[int, _Step] = {}
        self._dirty = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._ended = False
        self._edit_lock = asyncio.Lock()

    # -- what the runner tells it ------------------------------------------------------------

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def elapsed(self) -> float:
        return self.clock() - self._started

    async def queued(self, ahead: int, limit: int) -> None:
        self._head = messages.queued(ahead, limit)
        await self._show()

    async def reading(self, summary: str) -> None:
        self._head = messages.WORKING
        self._read = messages.status_reading(summary)
        self._started = self._last_event = self.clock()
        await self._show()
        if self._ticker is None and self.tick > 0:
            self._ticker = asyncio.create_task(self._tick())

    def on_event(self, event: Event) -> None:
        if self._ended:
            return
        self._last_event = self.clock()
        if isinstance(event, IterationStarted):
            self._steps.setdefault(event.iteration, _Step(event.iteration))
            self._waiting_model = True
        elif isinstance(event, RootReplied):
            self._step(event.iteration).plan = render.plan_sentence(event.reply)
            self._waiting_model = False
        elif isinstance(event, CodeExecuted):
            self._step(event.iteration).error |= event.error
        elif isinstance(event, SubcallProgress):
            step = self._step(event.iteration)
            step.map_done, step.map_total = event.done, event.total
            step.failed, step.refused = event.failed, event.refused
            step.refused_by = event.refused_by or step.refused_by
            step.subcalls = max(step.subcalls, event.done)
        elif isinstance(event, IterationFinished):
            step = self._step(event.iteration)
            step.plan = step.plan or render.plan_sentence(event.root_reply)
            step.done, step.seconds, step.subcalls = True, event.seconds, event.subcalls
            self._waiting_model = True  # the next reply is the model's again
        else:
            return
        self._mark()

    async def answered(
        self,
        *,
        answer: str,
        footer: str,
        links: Mapping[str, str],
        summary: str,
    ) -> None:
        """Post the answer (streamed or whole, in parts, the rest of a very long one in one
        file), then collapse the status."""
        await self._end()
        rendered = await render_answer_async(
            answer.strip() or messages.EMPTY_ANSWER, links, note=messages.ANSWER_CONTINUES
        )
        parts = rendered.parts
        if len(parts) > 1 or rendered.rest or not await self._stream(parts[0].markdown, footer):
            for i, part in enumerate(parts):
                last = i == len(parts) - 1
                await self._post_answer_part(part, footer if last else None)
            if rendered.rest:
                await self._post_rest(rendered.rest)
        await self._collapse(blocks.summary_blocks(self.run_id, summary, retry=False), summary)

    async def failed(self, sentence: str, *, detail: str = "", retry: bool = True) -> None:
        """The run ended without an answer: one sentence, what was read, Retry (when
        `retry`) and Show steps (when it took any)."""
        await self._end()
        detail = detail or self._read
        shown = blocks.summary_blocks(
            self.run_id, sentence, retry=retry, detail=detail, steps=bool(self._steps)
        )
        await self._collapse(shown, sentence)

    async def cancelled(self, user_id: str) -> None:
        await self._end()
        text = messages.cancelled(user_id, self.elapsed)
        shown = blocks.summary_blocks(self.run_id, text, retry=True, steps=bool(self._steps))
        await self._collapse(shown, text)

    async def close(self) -> None:
        """Stop the writer and ticker (the process is shutting down)."""
        self._ended = True
        for task in (self._writer, self._ticker):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    # -- the status message ------------------------------------------------------------------

    def _step(self, iteration: int) -> _Step:
        return self._steps.setdefault(iteration, _Step(iteration))

    def status_text(self) -> str:
        lines = [f"{self._head} · {self.elapsed:.0f} s" if self._read else self._head]
        if self._read:
            lines.append(self._read)
        steps = sorted(self._steps.values(), key=lambda s: s.iteration)
        if len(steps) > STEPS_SHOWN:
            lines.append(f"_{len(steps) - STEPS_SHOWN} earlier steps_")
        lines.extend(step.line() for step in steps[-STEPS_SHOWN:])
        silent = self.clock() - self._last_event
        if self._waiting_model and silent >= self.wait_notice:
            lines.append(messages.waiting_for_model(silent))
        return "\n".join(lines)

    def _mark(self) -> None:
        self._dirty.set()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())

    async def _write(self) -> None:
        """Edit the status whenever it changed, at most once per interval."""
        while not self._ended:
            await self._dirty.wait()
            await self.edit_pacer.turn(self.team_id)  # the workspace's share of chat.update
            self._dirty.clear()
            await self._show()
            await asyncio.sleep(self.edit_interval)

    async def _tick(self) -> None:
        while not self._ended:
            await asyncio.sleep(self.tick)
            self._mark()

    async def _show(self) -> None:
        text = self.status_text()
        await self._put(blocks.status_blocks(self.run_id, text, cancellable=True), text)

    async def _put(self, status: list[blocks.Block], text: str) -> None:
        """Post the status the first time, edit it afterwards; Slack's refusals are logged."""
        async with self._edit_lock:
            fallback = render.clip(text.split("\n", 1)[0], 1000)
            try:
                if self.status_ts is None:
                    await self.pacer.turn(self.channel)
                    reply = await self.client.chat_postMessage(
                        channel=self.channel,
                        thread_ts=self.thread_ts,
                        text=fallback,
                        blocks=status,
                        unfurl_links=False,
                        unfurl_media=False,
                    )
                    self.status_ts = str(reply["ts"])
                    self.posts += 1
                    if self.on_status_posted is not None:
                        await self.on_status_posted(self.status_ts)
                else:
                    await self.client.chat_update(
                        channel=self.channel, ts=self.status_ts, text=fallback, blocks=status
                    )
                    self.edits += 1
            except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
                logger.warning("run %d: status not shown: %s", self.run_id, _short(exc))

    async def _end(self) -> None:
        self._ended = True
        for task in (self._writer, self._ticker):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _collapse(self, summary: list[blocks.Block], text: str) -> None:
        await self._put(summary, text)

    # -- the answer --------------------------------------------------------------------------

    async def _post_answer_part(self, part: RenderedPart, footer: str | None) -> None:
        fallback = part.fallback
        if footer is not None:
            fallback = f"{fallback}\n\n{footer}"
        await self.pacer.turn(self.channel)
        try:
            await self.client.chat_postMessage(
                channel=self.channel,
                thread_ts=self.thread_ts,
                text=fallback,
                blocks=blocks.answer_blocks(self.run_id, part.markdown, footer),
                unfurl_links=False,
                unfurl_media=False,
            )
            self.posts += 1
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            logger.warning("run %d: answer part not posted: %s", self.run_id, _short(exc))

    async def _post_rest(self, rest: str) -> None:
        """The rest of an answer too long for messages, as one file in the thread."""
        await self.pacer.turn(self.channel)
        try:
            sent = await upload_text_file(
                self.client,
                session=self.client.session,
                api_url=self.client.base_url,
                channel=self.channel,
                thread_ts=self.thread_ts,
                filename=f"run-{self.run_id}-answer.md",
                data=rest.encode(),
                comment=messages.ANSWER_FILE_COMMENT,
            )
            self.posts += int(sent)
        except UPLOAD_FAILURES as exc:
            logger.warning("run %d: rest of the answer not posted: %s", self.run_id, _short(exc))

    async def _stream(self, markdown: str, footer: str) -> bool:
        """Stream a one-part answer (rendered: Slack markup inert); False (nothing posted)
        where streaming is unavailable."""
        if self.streams.available is False:
            return False
        pieces = [markdown[i : i + STREAM_PIECE] for i in range(0, len(markdown), STREAM_PIECE)]
        await self.pacer.turn(self.channel)
        try:
            reply = await self.client.chat_startStream(
                channel=self.channel,
                thread_ts=self.thread_ts,
                markdown_text=pieces[0],
                recipient_team_id=self.team_id,
                recipient_user_id=self.asker or None,
            )
        except SlackApiError as exc:
            if error_code(exc) in NO_STREAMING:
                self.streams.available = False
                logger.info("streaming unavailable (%s): answers are posted whole", error_code(exc))
                return False
            logger.warning("run %d: stream not started: %s", self.run_id, _short(exc))
            return False
        except (aiohttp.ClientError, TimeoutError) as exc:
            logger.warning("run %d: stream not started: %s", self.run_id, _short(exc))
            return False
        self.streams.available = True
        self.posts += 1
        ts = str(reply["ts"])
        try:
            for piece in pieces[1:]:
                await self.client.chat_appendStream(
                    channel=self.channel, ts=ts, markdown_text=piece
                )
            await self.client.chat_stopStream(
                channel=self.channel,
                ts=ts,
                blocks=blocks.answer_blocks(self.run_id, markdown, footer)[1:],
            )
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            logger.warning("run %d: stream cut short: %s", self.run_id, _short(exc))
        return True


def _short(exc: BaseException) -> str:
    if isinstance(exc, SlackApiError):
        return error_code(exc)
    return type(exc).__name__
