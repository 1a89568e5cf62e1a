"""A run's presence in the assistant pane or an agent conversation: the thread's status line
instead of a message.

`PanePresence` is a `RunPresence` whose live status becomes `assistant.threads.setStatus`
calls ("rlm is thinking (step 2)…", "rlm is reading in parts (312/500)…"), paced like the
status edits and sent only when the line changes (or, unchanged, once a minute: Slack drops
a status after two minutes without a message). The pane thread then gets only the answer,
which says what was read; a run that ends without one posts its one-sentence summary (with
Retry) instead, and the status line is cleared.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.presence import blocks
from bot.presence.run import RunPresence
from bot.slack import surface_messages as text

logger = logging.getLogger("bot.pane_status")

_FAILURES = (SlackApiError, aiohttp.ClientError, TimeoutError)
# Slack clears a status left two minutes without a message: an unchanged line is sent again
# after this long, and only then.
STATUS_REFRESH = 60.0


class PanePresence(RunPresence):
    """Progress as the pane thread's status; messages only for the answer or why none."""

    _answering = False
    _ahead: int | None = None
    _sent: str | None = None  # the status line last sent, and when
    _sent_at = 0.0
    status_calls = 0  # setStatus calls this run made

    def pane_line(self) -> str:
        steps = sorted(self._steps.values(), key=lambda s: s.iteration)
        if not steps:
            if self._read:
                return text.PANE_STATUS_STARTED
            if self._ahead is not None:
                return text.pane_queued(self._ahead)
            return text.PANE_STATUS_THINKING
        latest = steps[-1]
        if latest.map_total > 1 and latest.map_done < latest.map_total:
            return text.pane_mapping(latest.map_done, latest.map_total)
        return text.pane_step(latest.iteration)

    async def queued(self, ahead: int, limit: int) -> None:
        self._ahead = ahead
        await super().queued(ahead, limit)

    async def answered(
        self, *, answer: str, footer: str, links: Mapping[str, str], summary: str
    ) -> None:
        self._answering = True
        # The status line that said what was read is gone with the answer: the answer says it.
        footer = f"{self._read}\n{footer}" if self._read else footer
        await super().answered(answer=answer, footer=footer, links=links, summary=summary)

    async def _show(self) -> None:
        await self.set_status(text.pane_status(self.pane_line()))

    async def _collapse(self, summary: list[blocks.Block], text_: str) -> None:
        if not self._answering:  # no answer: say why, in one message with Retry
            await super()._put(summary, text_)
        await self.set_status("")  # Slack clears it on a reply; say so for other clients

    async def set_status(self, status: str, *, loading: Sequence[str] = ()) -> None:
        """Set the thread's status line, unless it already says `status` (a cleared line is
        always sent: clearing is what ends it)."""
        now = self.clock()
        if status and status == self._sent and now - self._sent_at < STATUS_REFRESH:
            return
        self._sent, self._sent_at = status, now
        self.status_calls += 1
        await pane_status(self.client, self.channel, self.thread_ts, status, loading=loading)


async def pane_status(
    client: AsyncWebClient,
    channel: str,
    thread_ts: str,
    status: str,
    *,
    loading: Sequence[str] = (),
) -> bool:
    """One `assistant.threads.setStatus` call; its failure costs only the status line."""
    try:
        await client.assistant_threads_setStatus(
            channel_id=channel,
            thread_ts=thread_ts,
            status=status,
            loading_messages=list(loading) or None,
        )
        return True
    except _FAILURES as exc:
        logger.info("could not set the status in %s: %s", channel, exc)
        return False
