"""A run's progress as the assistant pane's status line instead of thread replies.

`PaneStatus` is a `ProgressReporter` whose notes become `assistant.threads.setStatus` calls
("rlm is thinking (step 2)…"), paced and coalesced like replies, so a run in the pane posts
only its answer (and any notice of why it could not answer). The status is cleared once
something is posted.
"""

from __future__ import annotations

import logging

import aiohttp
from slack_sdk.errors import SlackApiError

from bot import surface_messages as text
from bot.progress import ProgressReporter
from rlm import Event, IterationStarted, SubcallProgress

logger = logging.getLogger("bot.pane_status")

_STATUS_KEY = "status"


class PaneStatus(ProgressReporter):
    """Progress shown as the pane thread's status; messages only for what must be said."""

    def note(self, key: str, line: str) -> None:
        if key == "reading":
            line = text.PANE_STATUS_THINKING
        super().note(_STATUS_KEY, text.pane_status(line))

    def on_event(self, event: Event) -> None:
        if isinstance(event, IterationStarted):
            self.note(_STATUS_KEY, text.pane_step(event.iteration))
        elif isinstance(event, SubcallProgress) and event.total > 1:
            self.note(_STATUS_KEY, text.pane_mapping(event.done, event.total))

    async def _flush(self) -> None:
        while self._pending:
            await self.pacer.turn(self.channel)
            status = list(self._pending.values())[-1]
            self._pending.clear()
            await self.set_status(status)

    async def say(self, text_: str) -> None:
        await super().say(text_)
        await self.set_status("")  # Slack clears it on a reply; say so for other clients

    async def set_status(self, status: str) -> None:
        try:
            await self.poster.client.assistant_threads_setStatus(
                channel_id=self.channel, thread_ts=self.thread_ts, status=status
            )
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            logger.info("could not set the pane status in %s: %s", self.channel, exc)
