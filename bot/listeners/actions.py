"""Listeners for a run's buttons: Cancel, Show steps (and its JSON Lines file), Retry, 👍/👎.

Thin as the other listeners: acknowledge at once, check the click is about a run of this
workspace and channel, and hand over to the runner or the store. Refusals are told to the
clicker alone (ephemeral). Controls keep state: 👍/👎 show how many chose each, a retried
message loses its Retry and says so; the steps' code and the full record go only to the
asker and admins (the record by DM), never into the thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext
from slack_sdk.errors import SlackApiError

from bot.presence import blocks
from bot.runs.runner import Question
from bot.slack import messages
from bot.slack.admins import is_workspace_admin
from bot.slack.api import serving_team
from bot.slack.files import UPLOAD_FAILURES, upload_text_file
from bot.storage import RunRecord

if TYPE_CHECKING:
    from bot.services import Services
    from bot.workspaces.tenants import Workspace

logger = logging.getLogger("bot.actions")

RETRYABLE = ("failed", "stopped", "interrupted")
_MAX_RUN_ID = 2**63 - 1  # a run id the database can hold: a larger value names no run


@dataclass(frozen=True)
class Click:
    """What a block_actions payload says: who clicked what, where."""

    team_id: str
    user_id: str
    channel_id: str | None
    run_id: int | None
    trigger_id: str | None
    action_id: str
    message_ts: str | None = None  # the message the button is on (none from a modal)
    message_blocks: tuple[dict[str, Any], ...] = ()

    @classmethod
    def parse(cls, body: dict[str, Any], context: AsyncBoltContext | None = None) -> Click:
        action = (body.get("actions") or [{}])[0]
        try:
            run_id: int | None = int(str(action.get("value")))
        except ValueError:
            run_id = None
        if run_id is not None and not 0 < run_id <= _MAX_RUN_ID:
            run_id = None
        team = body.get("team")
        message = body.get("message") if isinstance(body.get("message"), dict) else {}
        container = body.get("container") if isinstance(body.get("container"), dict) else {}
        shown = message.get("blocks") if isinstance(message.get("blocks"), list) else []
        return cls(
            # The workspace whose installation serves the click, as for events.
            team_id=serving_team(context)
            or str((team if isinstance(team, dict) else {}).get("id") or body.get("team_id") or ""),
            user_id=str((body.get("user") or {}).get("id") or ""),
            channel_id=(body.get("channel") or {}).get("id"),
            run_id=run_id,
            trigger_id=body.get("trigger_id"),
            action_id=str(action.get("action_id") or ""),
            message_ts=str(container.get("message_ts") or message.get("ts") or "") or None,
            message_blocks=tuple(b for b in shown if isinstance(b, dict)),
        )


def register_actions(app: AsyncApp, services: Services) -> None:
    controls = Controls(services)
    handlers: dict[str, Callable[[Click, Workspace], Coroutine[Any, Any, None]]] = {
        blocks.CANCEL: controls.cancel,
        blocks.SHOW_STEPS: controls.show_steps,
        blocks.TRAJECTORY: controls.post_trajectory,
        blocks.RETRY: controls.retry,
        blocks.FEEDBACK_UP: controls.feedback,
        blocks.FEEDBACK_DOWN: controls.feedback,
    }
    for action_id, handle in handlers.items():
        app.action(action_id)(_listener(services, handle))


def _listener(
    services: Services, handle: Callable[[Click, Workspace], Coroutine[Any, Any, None]]
) -> Callable[..., Coroutine[Any, Any, None]]:
    # Bolt fills a listener's arguments by name, so the handler is bound here, not as one.
    async def on_click(ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext) -> None:
        await ack()
        services.spawn(serve(Click.parse(body, context), context), name="action")

    async def serve(click: Click, context: AsyncBoltContext) -> None:
        # The click is handled with its own workspace's token and runs, never another's.
        await handle(click, await services.workspace(click.team_id, context))

    return on_click


class Controls:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.store = services.store
        self._retried: set[int] = set()

    async def _run_for(self, click: Click, ws: Workspace) -> RunRecord | None:
        """The clicked run, if it is this workspace's (and, from a message, this channel's)."""
        run = await self.store.get_run(click.run_id) if click.run_id is not None else None
        if (
            run is None
            or run.team_id != click.team_id
            or (click.channel_id is not None and run.channel_id != click.channel_id)
        ):
            logger.warning("%s on an unknown run %r by %s", click.action_id, click.run_id,
                           click.user_id)  # fmt: skip
            await self._tell(click, ws, messages.RUN_GONE)
            return None
        return run

    async def _tell(
        self, click: Click, ws: Workspace, text: str, channel: str | None = None
    ) -> None:
        channel = channel or click.channel_id
        if channel:
            await ws.poster.tell_user(channel, click.user_id, text)

    async def _is_admin(self, ws: Workspace, user_id: str) -> bool:
        return await is_workspace_admin(ws.poster.client, user_id)

    async def _may_see_code(self, ws: Workspace, run: RunRecord, user_id: str) -> bool:
        """The steps' code and outputs are the asker's and admins' to see."""
        return user_id == run.user_id or await self._is_admin(ws, user_id)

    async def _update(self, ws: Workspace, click: Click, shown: list[blocks.Block]) -> None:
        """Edit the clicked message in place; Slack's refusal is logged, not raised."""
        if not (click.channel_id and click.message_ts):
            return
        try:
            await ws.poster.client.chat_update(
                channel=click.channel_id, ts=click.message_ts, blocks=shown, text=_text(shown)
            )
        except SlackApiError as exc:
            logger.warning("chat.update after %s failed: %s", click.action_id,
                           exc.response.get("error"))  # fmt: skip

    async def cancel(self, click: Click, ws: Workspace) -> None:
        entry = ws.runner.active.get(click.run_id) if click.run_id is not None else None
        if entry is None:
            if await self._run_for(click, ws) is not None:
                await self._tell(click, ws, messages.RUN_NOT_ACTIVE)
            return
        run_channel = entry.presence.channel
        if entry.presence.team_id != click.team_id or click.channel_id not in (None, run_channel):
            await self._tell(click, ws, messages.RUN_GONE)
            return
        if click.user_id != entry.asker and not await self._is_admin(ws, click.user_id):
            await self._tell(click, ws, messages.CANCEL_NOT_ALLOWED)
            return
        assert click.run_id is not None
        if not await ws.runner.cancel(click.run_id, click.user_id):
            await self._tell(click, ws, messages.RUN_NOT_ACTIVE)

    async def show_steps(self, click: Click, ws: Workspace) -> None:
        run = await self._run_for(click, ws)
        if run is None or not click.trigger_id:
            return
        steps = await self.store.list_iterations(run.id)
        full = await self._may_see_code(ws, run, click.user_id)
        read = messages.read_from(await self.store.read_counts(run.id))
        try:
            await ws.poster.client.views_open(
                trigger_id=click.trigger_id,
                view=blocks.steps_modal(run.id, steps, read=read, full=full),
            )
        except SlackApiError as exc:
            logger.warning("views.open for run %d failed: %s", run.id, exc.response.get("error"))

    async def post_trajectory(self, click: Click, ws: Workspace) -> None:
        """Send the run's steps as a JSON Lines file to the clicker's DM with the app (the
        asker or an admin only): its code and outputs never go into the thread."""
        run = await self._run_for(click, ws)
        if run is None:
            return
        if not await self._may_see_code(ws, run, click.user_id):
            await self._tell(click, ws, messages.RECORD_ONLY_ASKER, channel=run.channel_id)
            return
        data = blocks.trajectory_jsonl(await self.store.list_iterations(run.id)).encode()
        name = f"run-{run.id}-trajectory.jsonl"
        try:
            # A user's id as channel posts in the app's DM with them (chat:write only).
            intro = await ws.poster.client.chat_postMessage(
                channel=click.user_id, text=messages.record_intro(run.question)
            )
            sent = await upload_text_file(
                ws.poster.client,
                session=self.services.session,
                api_url=self.services.settings.slack_api_url,
                channel=str(intro["channel"]),
                thread_ts=None,
                filename=name,
                data=data,
                comment=messages.TRAJECTORY_COMMENT,
            )
        except UPLOAD_FAILURES as exc:
            logger.warning("trajectory upload for run %d failed: %s", run.id, exc)
            return
        if sent:
            await self._tell(click, ws, messages.RECORD_SENT, channel=run.channel_id)

    async def retry(self, click: Click, ws: Workspace) -> None:
        run = await self._run_for(click, ws)
        if run is None:
            return
        if run.status not in RETRYABLE:
            await self._tell(click, ws, messages.RETRY_NOT_ALLOWED)
            return
        later = await self.store.thread_runs(run.team_id, run.channel_id, run.thread_ts or "")
        if run.id in self._retried or any(
            other.id > run.id and other.question == run.question for other in later
        ):
            await self._tell(click, ws, messages.RETRY_DONE)
            return
        self._retried.add(run.id)
        if click.message_blocks:  # the old message says so and loses its Retry
            await self._update(ws, click, blocks.retried_blocks(click.message_blocks))
        await ws.runner.ask(
            Question(
                team_id=run.team_id,
                channel_id=run.channel_id,
                user_id=click.user_id,
                text=run.question,
                trigger="command" if run.trigger == "command" else "mention",
                scope="thread" if run.scope == "thread" else "channel",
                thread_ts=run.thread_ts,
                retry_of=run.id,
            )
        )

    async def feedback(self, click: Click, ws: Workspace) -> None:
        run = await self._run_for(click, ws)
        if run is None:
            return
        value = "up" if click.action_id == blocks.FEEDBACK_UP else "down"
        await self.store.set_feedback(run.id, click.user_id, value)
        if click.message_blocks:  # the buttons show how many chose each
            votes = list((await self.store.feedback(run.id)).values())
            shown = blocks.with_feedback(
                click.message_blocks, run.id, votes.count("up"), votes.count("down")
            )
            await self._update(ws, click, shown)
        thanks = messages.FEEDBACK_UP_THANKS if value == "up" else messages.FEEDBACK_DOWN_THANKS
        await self._tell(click, ws, thanks)


def _text(shown: list[blocks.Block]) -> str:
    """The fallback text of an edited message: its first section's or markdown's text."""
    for block in shown:
        text = block.get("text")
        if isinstance(text, dict):
            text = text.get("text")
        if isinstance(text, str) and text:
            return text[:1000]
    return messages.RETRIED_BELOW
