"""A text file posted in a thread through Slack's external upload flow (get an upload URL,
send the bytes there, complete the upload into the thread): Show steps' trajectory and the
rest of an answer too long for messages. The bytes go only to an upload URL on Slack."""

from __future__ import annotations

import logging

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.api import is_slack_host

logger = logging.getLogger("bot.slack_files")

UPLOAD_FAILURES = (SlackApiError, aiohttp.ClientError, TimeoutError)


async def upload_text_file(
    client: AsyncWebClient,
    *,
    session: aiohttp.ClientSession | None,
    api_url: str,
    channel: str,
    thread_ts: str | None,
    filename: str,
    data: bytes,
    comment: str,
) -> bool:
    """Post `data` as `filename` in the thread; False (logged) when the upload URL is not
    Slack's. Slack's refusals and network failures are raised for the caller to log."""
    ticket = await client.files_getUploadURLExternal(filename=filename, length=len(data))
    url = str(ticket["upload_url"])
    if not is_slack_host(url, api_url):
        logger.warning("upload URL for %s is not Slack's: not sent", filename)
        return False
    if session is None:  # a client made without a shared session
        async with aiohttp.ClientSession() as own, own.post(url, data=data) as response:
            response.raise_for_status()
    else:
        async with session.post(url, data=data) as response:
            response.raise_for_status()
    await client.files_completeUploadExternal(
        files=[{"id": ticket["file_id"], "title": filename}],
        channel_id=channel,
        thread_ts=thread_ts,
        initial_comment=comment,
    )
    return True
