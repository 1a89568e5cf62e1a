"""The workspace that reads is the workspace that pays: in a Slack Connect channel an event's
`team_id` (the sender's workspace) can differ from `authorizations[0].team_id` (the install
that serves it). The run is read with the serving install's token and stored, budgeted and
configured under its workspace.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

from bot_harness import mention
from oauth_flow import Browser, oauth_settings
from slack_server import BOT_USER


def shared_channel_event(event: dict, *, sender_team: str, serving_team: str) -> str:
    """An Events API body as Slack sends it for a Slack Connect channel: the event comes from
    `sender_team`, and the app is authorized through `serving_team`'s install."""
    return json.dumps(
        {
            "token": "legacy",
            "team_id": sender_team,
            "api_app_id": "A1",
            "event": {**event, "team": sender_team, "user_team": sender_team},
            "type": "event_callback",
            "event_id": f"EvShared{time.monotonic_ns()}",
            "event_time": int(time.time()),
            "is_ext_shared_channel": True,
            "authorizations": [{"team_id": serving_team, "user_id": BOT_USER, "is_bot": True}],
        }
    )


async def test_a_shared_channel_event_is_served_under_the_authorizing_workspace(
    make_bot, slack, llm_server
):
    # CS is shared: owned by TA's side, where the app was installed; TB's member asks.
    slack.add_channel("CS", "shared")
    slack.channel_teams["CS"] = "TA"
    slack.add_channel("CB", "general-tb")
    slack.channel_teams["CB"] = "TB"
    slack.add_user("UA", "Ada")
    slack.add_user("UB", "Bea")
    slack.users["UA"]["is_admin"] = True
    slack.add_message("CS", "The shared project lands on Thursday.", user="UA")
    bot = await make_bot(**oauth_settings(slack, rlm_allowed_models="openai:root-large"))
    browser = Browser(f"http://127.0.0.1:{bot.http.port}")
    try:
        await browser.install(slack, "TA")
        await browser.install(slack, "TB")
    finally:
        await browser.close()
    [token_a], [token_b] = slack.tokens_of("TA"), slack.tokens_of("TB")
    book = bot.services.tenants.book
    await book.change("TA", "root_model", "openai:root-large", user_id="UA")

    calls_before = len(slack.calls)  # the installs themselves used both tokens
    ts = slack.add_message("CS", "<@UBOT> when does it land?", user="UB")
    body = shared_channel_event(
        mention("CS", "<@UBOT> when does it land?", ts, user="UB"),
        sender_team="TB",
        serving_team="TA",
    )
    reply = await bot.events.send(body, "application/json")
    assert reply.status == 200
    await bot.settle()

    [run] = await bot.store.list_runs()
    assert (run.team_id, run.status) == ("TA", "finished")  # stored under the serving one
    assert run.root_model == "openai:root-large"  # configured by TA's settings
    used = {c.token for c in slack.calls[calls_before:] if c.token in (token_a, token_b)}
    assert used == {token_a}  # read and answered with TA's token only
    assert not [c for c in slack.calls if c.error in ("channel_not_found", "invalid_auth")]
    assert len(slack.posts("CS", thread_ts=ts)) >= 2  # status and answer
    since = datetime.now(UTC) - timedelta(hours=1)
    assert await bot.store.tokens_used_since("TA", since) > 0  # budgeted to TA
    assert await bot.store.tokens_used_since("TB", since) == 0
    assert await bot.store.list_runs(team_id="TB") == []
