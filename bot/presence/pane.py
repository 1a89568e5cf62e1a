"""A run's presence in the assistant pane: the thread's status line instead of a message.

`PanePresence` is a `RunPresence` whose live status becomes `assistant.threads.setStatus`
calls ("rlm is thinking (step 2)…", "rlm is reading in parts (312/500)…"), paced like the
status edits. The pane thread then gets only the answer; a run that ends without one posts
its one-sentence summary (with Retry) instead, and the status line is cleared.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import aiohttp
from slack_sdk.errors import SlackApiError

from bot.presence import blocks
from bot.presence.run import RunPresence
from bot.slack import surface_messages as text

logger = logging.getLogger("bot.pane_status")

_FAILURES = (SlackApiError, aiohttp.ClientError, TimeoutError)


class PanePresence(RunPresence):
    """Progress as the pane thread's status; messages only for the answer or why none."""

    _answering = False

    def pane_line(self) -> str:
        steps = sorted(self._steps.values(), key=lambda s: s.iteration)
        if not steps:
            return text.PANE_STATUS_THINKING
        latest = steps[-1]
        if latest.map_total > 1 and latest.map_done < latest.map_total:
            return text.pane_mapping(latest.map_done, latest.map_total)
        return text.pane_step(latest.iteration)

    async def answered(
        self, *, answer: str, footer: str, links: Mapping[str, str], summary: str
    ) -> None:
        self._answering = True
        await super().answered(answer=answer, footer=footer, links=links, summary=summary)

    async def _show(self) -> None:
        await self.set_status(text.pane_status(self.pane_line()))

    async def _collapse(self, summary: list[blocks.Block], text_: str) -> None:
        if not self._answering:  # no answer: say why, in one message with Retry
            await super()._put(summary, text_)
        await self.set_status("")  # Slack clears it on a reply; say so for other clients

    async def set_status(self, status: str) -> None:
        try:
            await self.client.assistant_threads_setStatus(
                channel_id=self.channel, thread_ts=self.thread_ts, status=status
            )
        except _FAILURES as exc:
            logger.info("could not set the pane status in %s: %s", self.channel, exc)
