"""Many workspaces end to end: OAuth installs through the real flow, each workspace answered
with its own token, admins' settings kept apart, uninstalls, token rotation, org-wide installs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.parse
from datetime import UTC, datetime, timedelta

import pytest
from bot_harness import mention
from oauth_flow import ENCRYPTION_KEY, Browser, oauth_settings, org_event
from slack_oauth import CLIENT_ID, CLIENT_SECRET, STATE_SECRET
from sqlalchemy import inspect, text

from bot.workspaces import config_command
from bot.workspaces.installs import INSTALL_PATH


@pytest.fixture
def two_teams(slack):
    """Channels CA (workspace TA) and CB (workspace TB); UA admin of TA, UA2 not, UB of TB."""
    for channel, team in (("CA", "TA"), ("CB", "TB")):
        slack.add_channel(channel, f"general-{team.lower()}")
        slack.channel_teams[channel] = team
    slack.add_user("UA", "Ada")
    slack.add_user("UA2", "Al")
    slack.add_user("UB", "Bea")
    slack.users["UA"]["is_admin"] = True
    slack.users["UB"]["is_owner"] = True
    slack.add_message("CA", "Team A ships the rocket on Monday.", user="UA")
    slack.add_message("CB", "Team B ships the boat on Tuesday.", user="UB")
    return slack


@pytest.fixture
async def oauth_bot(make_bot, slack):
    bot = await make_bot(**oauth_settings(slack))
    browser = Browser(f"http://127.0.0.1:{bot.http.port}")
    yield bot, browser
    await browser.close()


async def table_texts(bot) -> list[str]:
    """Every value of every column of every table, as text (SQLite or PostgreSQL)."""
    engine = bot.store._engine
    async with engine.connect() as connection:
        tables = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
        texts = []
        for table in tables:
            rows = (await connection.execute(text(f'SELECT * FROM "{table}"'))).all()
            texts += [str(v) for row in rows for v in row]
    return texts


async def wait_for_status(bot, team_id: str, status: str) -> None:
    for _ in range(500):
        if any(r.status == status for r in await bot.store.list_runs(team_id=team_id)):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"no run of {team_id} became {status}")


def tokens_used(slack, channel: str) -> set[str]:
    return {c.token for c in slack.calls if c.params.get("channel") == channel and c.token}


async def test_two_workspaces_install_and_each_is_answered_with_its_own_token(
    oauth_bot, two_teams, llm_server, caplog
):
    caplog.set_level(logging.DEBUG)
    bot, browser = oauth_bot
    slack = two_teams
    page = await browser.install_page()
    assert page.status == 200 and page.cookie.startswith("slack-app-oauth-state=")
    assert page.authorize_url.startswith(slack.url + "/oauth/v2/authorize?")
    assert f"client_id={CLIENT_ID}" in page.authorize_url and "chat:write" in page.authorize_url
    await browser.install(slack, "TA")
    await browser.install(slack, "TB")
    [token_a], [token_b] = slack.tokens_of("TA"), slack.tokens_of("TB")

    assert (
        await bot.events.command("ask what ships?", team_id="TA", channel_id="CA", user_id="UA")
    ).status == 200
    ts = slack.add_message("CB", "<@UBOT> what ships?", user="UB")
    await bot.events.event(mention("CB", "<@UBOT> what ships?", ts, user="UB"), team_id="TB")
    await bot.settle()

    assert tokens_used(slack, "CA") == {token_a} and tokens_used(slack, "CB") == {token_b}
    assert not [c for c in slack.calls if c.error in ("channel_not_found", "invalid_auth")]
    root_a = slack.message_with("CA", "*<@UA> asked:*")
    assert len(slack.posts("CA", thread_ts=root_a["ts"])) >= 2  # status and answer
    assert len(slack.posts("CB", thread_ts=ts)) >= 2
    runs = {r.team_id: r for r in await bot.store.list_runs()}
    assert set(runs) == {"TA", "TB"} and all(r.status == "finished" for r in runs.values())
    subs = [r.prompt for r in llm_server.requests if r.kind == "sub"]
    assert any("rocket" in p for p in subs) and any("boat" in p for p in subs)
    assert not any("rocket" in p and "boat" in p for p in subs)  # never one context for both

    # Usage is each workspace's own.
    await bot.events.command("usage", team_id="TB", channel_id="CB", user_id="UB")
    # No token, secret or key in any log line.
    for secret in (token_a, token_b, CLIENT_SECRET, STATE_SECRET, ENCRYPTION_KEY):
        assert secret not in caplog.text


async def test_a_workspace_that_never_installed_is_not_served(oauth_bot, two_teams):
    bot, browser = oauth_bot
    await browser.install(two_teams, "TA")
    await bot.events.command("ask what ships?", team_id="TB", channel_id="CB", user_id="UB")
    await bot.settle()
    assert two_teams.posts("CB") == [] and await bot.store.list_runs() == []


async def test_forged_replayed_and_cookieless_states_are_refused(oauth_bot, two_teams):
    _, browser = oauth_bot
    slack = two_teams
    page = await browser.install_page()
    forged = page.state.split(".")[0] + ".0123456789abcdef0123456789abcdef"
    for state, cookie in (
        (forged, f"slack-app-oauth-state={forged}"),  # signed by someone else
        (page.state, None),  # another browser than the one that started
        ("made-up", "slack-app-oauth-state=made-up"),
    ):
        refused = await browser.redirect(code=slack.issue_code("TA"), state=state, cookie=cookie)
        assert refused.status in (400, 401), (state, refused.status)
    assert slack.tokens_of("TA") == []  # no code was exchanged
    ok = await browser.redirect(code=slack.issue_code("TA"), state=page.state, cookie=page.cookie)
    assert ok.status == 200
    replayed = await browser.redirect(
        code=slack.issue_code("TA"), state=page.state, cookie=page.cookie
    )
    assert replayed.status == 401
    assert len(slack.tokens_of("TA")) == 1


async def test_the_database_holds_no_token_in_clear_text(oauth_bot, two_teams):
    bot, browser = oauth_bot
    slack = two_teams
    await browser.install(slack, "TA", rotation=True)
    await browser.install(slack, "TB")
    await bot.events.command("ask what ships?", team_id="TA", channel_id="CA", user_id="UA")
    await bot.settle()
    secrets = [*slack.grants, *slack.refresh_tokens, CLIENT_SECRET, STATE_SECRET]
    assert len(secrets) >= 5
    texts = await table_texts(bot)
    assert not [t for t in texts if "xox" in t or any(s in t for s in secrets)]
    # ...while the installation store reads them back.
    found = await bot.services.oauth.installations.async_find_bot(enterprise_id=None, team_id="TB")
    assert found.bot_token in slack.tokens_of("TB")


async def test_settings_are_per_workspace_and_only_admins_change_them(
    oauth_bot, two_teams, llm_server
):
    bot, browser = oauth_bot
    slack = two_teams
    await browser.install(slack, "TA")
    await browser.install(slack, "TB")

    await bot.events.command(
        "config root_model openai:root-large", team_id="TA", channel_id="CA", user_id="UA2"
    )
    await bot.settle()
    assert "Only a workspace admin" in slack.ephemerals("UA2")[-1]

    await bot.events.command("config parallel_calls 3", team_id="TA", channel_id="CA", user_id="UA")
    await bot.events.command(
        "config daily_tokens 50000", team_id="TA", channel_id="CA", user_id="UA"
    )
    await bot.settle()
    assert slack.ephemerals("UA")[-1].startswith("Done: `daily_tokens` is now `50000`")
    book = bot.services.tenants.book
    a, b = await book.effective("TA"), await book.effective("TB")
    assert (a.max_parallel_calls, a.daily_tokens) == (3, 50000)
    assert b == book.defaults
    # Each workspace's limiter is its own, at its own cap.
    ws_a = await bot.services.tenants.workspace("TA")
    ws_b = await bot.services.tenants.workspace("TB")
    assert ws_a.runner.limiters.get("TA").max_in_flight == 3
    assert ws_b.runner.limiters.get("TB").max_in_flight == bot.settings.rlm_max_parallel_calls
    assert ws_a.runner.limiters is not ws_b.runner.limiters

    await bot.events.command("config", team_id="TB", channel_id="CB", user_id="UB")
    await bot.settle()
    shown = slack.ephemerals("UB")[-1]
    assert "`parallel_calls` = `10` _(default)_" in shown
    # An admin gives a value back to the default.
    await bot.events.command(
        "config daily_tokens default", team_id="TA", channel_id="CA", user_id="UA"
    )
    await bot.settle()
    assert slack.ephemerals("UA")[-1] == config_command.RESET.format(name="daily_tokens")
    assert (await book.effective("TA")).daily_tokens == book.defaults.daily_tokens


async def test_a_workspaces_models_are_used_by_its_runs_only(make_bot, two_teams, llm_server):
    slack = two_teams
    bot = await make_bot(**oauth_settings(slack, rlm_allowed_models="openai:root-large"))
    browser = Browser(f"http://127.0.0.1:{bot.http.port}")
    try:
        await browser.install(slack, "TA")
        await browser.install(slack, "TB")
        await bot.events.command(
            "config root_model openai:root-large", team_id="TA", channel_id="CA", user_id="UA"
        )
        await bot.settle()
        await bot.events.command("ask what ships?", team_id="TA", channel_id="CA", user_id="UA")
        await bot.settle()
        await bot.events.command("ask what ships?", team_id="TB", channel_id="CB", user_id="UB")
        await bot.settle()
    finally:
        await browser.close()
    runs = {r.team_id: r for r in await bot.store.list_runs()}
    assert runs["TA"].root_model == "openai:root-large"
    assert runs["TB"].root_model == "openai:root-model"
    roots = [r for r in llm_server.requests if r.kind == "root"]
    assert {r.model for r in roots} == {"root-large", "root-model"}


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("config parallel_calls many", "`parallel_calls` takes a whole number"),
        ("config parallel_calls 0", "must be at least 1"),
        ("config parallel_calls 5000", "can be at most 100 here"),
        ("config speed 3", "There is no setting called `speed`"),
        ("config root_model gpt-4o", "is not a model I can use"),
        ("config root_model openai:gpt-9", "not among the models the operator allows"),
        ("config history_days", "Give a value too"),
    ],
)
async def test_bad_settings_get_a_clear_message_and_change_nothing(
    oauth_bot, two_teams, words, expected
):
    bot, browser = oauth_bot
    await browser.install(two_teams, "TA")
    await bot.events.command(words, team_id="TA", channel_id="CA", user_id="UA")
    await bot.settle()
    assert expected in two_teams.ephemerals("UA")[-1]
    assert await bot.services.tenants.book.effective("TA") == bot.services.tenants.book.defaults


async def test_uninstall_deletes_tokens_stops_runs_and_purges_after_retention(
    oauth_bot, two_teams, llm_server
):
    bot, browser = oauth_bot
    slack = two_teams
    await browser.install(slack, "TA")
    await browser.install(slack, "TB")
    await bot.events.command("ask what ships?", team_id="TB", channel_id="CB", user_id="UB")
    await bot.settle()
    llm_server.root_latency = 30.0  # the next run is still thinking when the app is removed
    await bot.events.command("ask what ships?", team_id="TA", channel_id="CA", user_id="UA")

    await wait_for_status(bot, "TA", "running")
    slack.revoke("TA")
    await bot.events.event({"type": "app_uninstalled"}, team_id="TA")
    await bot.settle(10)
    llm_server.root_latency = 0.0

    [run_a] = await bot.store.list_runs(team_id="TA")
    assert run_a.status == "interrupted"
    installs = bot.services.oauth.installations
    assert await installs.async_find_bot(enterprise_id=None, team_id="TA") is None
    assert await installs.async_find_installation(enterprise_id=None, team_id="TA") is None
    assert await installs.async_find_bot(enterprise_id=None, team_id="TB") is not None
    # Kept until the retention runs out, then purged; the other workspace keeps everything.
    uninstaller = bot.services.uninstaller
    assert await uninstaller.purge_due(datetime.now(UTC) + timedelta(days=89)) == 0
    assert len(await bot.store.list_runs(team_id="TA")) == 1
    assert await uninstaller.purge_due(datetime.now(UTC) + timedelta(days=91)) == 1
    assert await bot.store.list_runs(team_id="TA") == []
    assert len(await bot.store.list_runs(team_id="TB")) == 1


async def test_purge_on_uninstall_removes_data_at_once(make_bot, two_teams):
    slack = two_teams
    bot = await make_bot(**oauth_settings(slack, rlm_purge_on_uninstall=True))
    browser = Browser(f"http://127.0.0.1:{bot.http.port}")
    try:
        await browser.install(slack, "TA")
        await bot.events.command("ask what ships?", team_id="TA", channel_id="CA", user_id="UA")
        await bot.settle()
        assert len(await bot.store.list_runs(team_id="TA")) == 1
        slack.revoke("TA")
        await bot.events.event(
            {"type": "tokens_revoked", "tokens": {"oauth": [], "bot": ["UBOT"]}}, team_id="TA"
        )
        await bot.settle()
    finally:
        await browser.close()
    assert await bot.store.list_runs(team_id="TA") == []
    assert not [t for t in await table_texts(bot) if "ships" in t]


async def test_an_expired_rotating_token_is_refreshed_before_use(oauth_bot, two_teams):
    bot, browser = oauth_bot
    slack = two_teams
    # Expiring within the refresh window (2 hours): the next request refreshes it first.
    await browser.install(slack, "TA", rotation=True, expires_in=60)
    [first] = slack.tokens_of("TA")
    assert first.startswith("xoxe.xoxb-")
    await bot.events.command("ask what ships?", team_id="TA", channel_id="CA", user_id="UA")
    await bot.settle()
    refreshes = [
        c
        for c in slack.calls_to("oauth.v2.access")
        if c.params.get("grant_type") == "refresh_token"
    ]
    assert len(refreshes) == 1
    second = [t for t in slack.tokens_of("TA") if t != first]
    assert len(second) == 1 and slack.grants[first].revoked
    assert tokens_used(slack, "CA") == {second[0]}
    [run] = await bot.store.list_runs(team_id="TA")
    assert run.status == "finished"


async def test_an_org_wide_install_serves_each_workspace_under_its_own_limits(
    oauth_bot, slack, llm_server
):
    bot, browser = oauth_bot
    for channel, team in (("CE1", "TE1"), ("CE2", "TE2")):
        slack.add_channel(channel, f"org-{team.lower()}")
        slack.channel_teams[channel] = team
        slack.team_enterprises[team] = "E1"
        slack.add_message(channel, f"Workspace {team} plans the picnic.", user="U1")
    slack.add_user("UE", "Eve")
    slack.users["UE"]["is_admin"] = True
    await browser.install(slack, None, enterprise_id="E1")
    [org_token] = slack.tokens_of(None, "E1")

    ts = slack.add_message("CE1", "<@UBOT> what is planned?", user="U1")
    body = org_event(
        mention("CE1", "<@UBOT> what is planned?", ts), team_id="TE1", enterprise_id="E1"
    )
    assert (await bot.events.send(body, "application/json")).status == 200
    await bot.settle()
    [run] = await bot.store.list_runs()
    assert (run.team_id, run.status) == ("TE1", "finished")
    assert tokens_used(slack, "CE1") == {org_token}
    # Settings of one workspace of the organisation leave the other's alone.
    await bot.services.tenants.book.change("TE1", "runs_at_once", "5", user_id="UE")
    assert (await bot.services.tenants.book.effective("TE1")).max_runs == 5
    assert (
        await bot.services.tenants.book.effective("TE2")
    ).max_runs == bot.settings.rlm_max_runs_per_workspace
    # An org-wide uninstall removes the organisation's token and stops its runs.
    llm_server.root_latency = 30.0
    ts = slack.add_message("CE2", "<@UBOT> and here?", user="U1")
    body = org_event(mention("CE2", "<@UBOT> and here?", ts), team_id="TE2", enterprise_id="E1")
    await bot.events.send(body, "application/json")
    await wait_for_status(bot, "TE2", "running")
    slack.revoke(None, "E1")
    body = org_event({"type": "app_uninstalled"}, team_id="TE1", enterprise_id="E1")
    await bot.events.send(body, "application/json")
    await bot.settle(10)
    llm_server.root_latency = 0.0
    assert [r.status for r in await bot.store.list_runs(team_id="TE2")] == ["interrupted"]
    installs = bot.services.oauth.installations
    assert await installs.async_find_bot(enterprise_id="E1", team_id=None) is None
    # Both of its workspaces' data go when the retention runs out.
    later = datetime.now(UTC) + timedelta(days=91)
    assert await bot.services.uninstaller.purge_due(later) == 1
    assert await bot.store.list_runs() == []


async def test_user_tokens_revoked_leave_the_bot_installed(oauth_bot, two_teams):
    bot, browser = oauth_bot
    await browser.install(two_teams, "TA")
    await bot.events.event(
        {"type": "tokens_revoked", "tokens": {"oauth": ["UA"], "bot": []}}, team_id="TA"
    )
    await bot.settle()
    installs = bot.services.oauth.installations
    assert await installs.async_find_bot(enterprise_id=None, team_id="TA") is not None


async def test_runs_a_crash_left_are_told_with_their_own_workspaces_token(make_bot, two_teams):
    slack = two_teams
    first = await make_bot(**oauth_settings(slack))
    browser = Browser(f"http://127.0.0.1:{first.http.port}")
    try:
        await browser.install(slack, "TA")
        await browser.install(slack, "TB")
    finally:
        await browser.close()
    for team, channel in (("TA", "CA"), ("TB", "CB")):
        await first.store.create_run(
            team_id=team, channel_id=channel, thread_ts="1.000001", user_id="U", question="q",
            root_model="openai:root-model", sub_model="openai:sub-model", trigger="command",
            status="running",
        )  # fmt: skip
    await first.close()  # no task of this process knew these runs: as after a crash
    again = await make_bot(**oauth_settings(slack))
    assert {r.status for r in await again.store.list_runs()} == {"interrupted"}
    [token_a], [token_b] = slack.tokens_of("TA"), slack.tokens_of("TB")
    told = {c.params["channel"]: c.token for c in slack.calls_to("chat.postMessage")}
    assert told == {"CA": token_a, "CB": token_b}


def test_the_install_path_is_slacks_usual_one():
    assert INSTALL_PATH == "/slack/install"
    assert config_command.NOT_ADMIN.startswith("Only a workspace admin")


async def test_a_new_key_is_rolled_in_at_start_and_the_old_one_can_go(make_bot, two_teams):
    from oauth_flow import OLD_KEY

    slack = two_teams
    first = await make_bot(**oauth_settings(slack, rlm_encryption_key=OLD_KEY))
    browser = Browser(f"http://127.0.0.1:{first.http.port}")
    try:
        await browser.install(slack, "TA")
    finally:
        await browser.close()
    await first.close()
    # Both keys, newest first: the start writes every stored token again with the newest.
    rolling = await make_bot(
        **oauth_settings(slack, rlm_encryption_key=f"{ENCRYPTION_KEY},{OLD_KEY}")
    )
    await rolling.close()
    newest_only = await make_bot(**oauth_settings(slack))
    await newest_only.events.command("ask what ships?", team_id="TA", channel_id="CA", user_id="UA")
    await newest_only.settle()
    [run] = await newest_only.store.list_runs(team_id="TA")
    assert run.status == "finished"


async def test_socket_mode_serves_the_install_pages_on_a_listener_of_their_own(
    oauth_bot, two_teams
):
    from bot.workspaces.installs import serve_install_pages

    bot, _ = oauth_bot
    pages = await serve_install_pages(bot.services.oauth.flow, host="127.0.0.1", port=0)
    browser = Browser(f"http://127.0.0.1:{pages.addresses[0][1]}")
    try:
        await browser.install(two_teams, "TA")
        async with browser.session.post(browser.base_url + "/slack/events", data="{}") as r:
            assert r.status in (404, 405)  # only the install pages live there
    finally:
        await browser.close()
        await pages.cleanup()
    assert len(two_teams.tokens_of("TA")) == 1
    found = await bot.services.oauth.installations.async_find_bot(enterprise_id=None, team_id="TA")
    assert found.bot_token == two_teams.tokens_of("TA")[0]


async def test_even_debug_logs_carry_no_token_or_secret(make_bot, two_teams, caplog):
    caplog.set_level(logging.DEBUG)
    slack = two_teams
    bot = await make_bot(**oauth_settings(slack, rlm_log_level="DEBUG"))
    browser = Browser(f"http://127.0.0.1:{bot.http.port}")
    try:
        await browser.install(slack, "TA", rotation=True, expires_in=60)  # refreshed at once
        await bot.events.command("ask what ships?", team_id="TA", channel_id="CA", user_id="UA")
        await bot.settle()
    finally:
        await browser.close()
    assert len(slack.grants) == 2  # the install's token and its refreshed successor
    assert "oauth.v2.access" in caplog.text  # the SDK's own request logs were kept
    for secret in (
        *slack.grants,
        *slack.refresh_tokens,
        CLIENT_SECRET,
        STATE_SECRET,
        ENCRYPTION_KEY,
    ):
        assert secret not in caplog.text


def submission(team_id: str, user_id: str, values: dict[str, str]) -> str:
    payload = {
        "type": "view_submission",
        "team": {"id": team_id, "domain": "test"},
        "user": {"id": user_id, "team_id": team_id},
        "api_app_id": "A1",
        "token": "legacy",
        "trigger_id": "trigger-form",
        "is_enterprise_install": False,
        "view": {
            "id": "VFORM",
            "team_id": team_id,
            "type": "modal",
            "callback_id": "rlm_config",
            "private_metadata": "{}",
            "state": {
                "values": {
                    k: {"value": {"type": "plain_text_input", "value": v}}
                    for k, v in values.items()
                }
            },
        },
    }
    return urllib.parse.urlencode({"payload": json.dumps(payload)})


async def test_the_settings_form_opens_for_admins_and_saves_only_good_values(oauth_bot, two_teams):
    bot, browser = oauth_bot
    slack = two_teams
    await browser.install(slack, "TA")
    await browser.install(slack, "TB")
    book = bot.services.tenants.book

    await bot.events.command("config edit", team_id="TA", channel_id="CA", user_id="UA2")
    await bot.settle()
    assert "Only a workspace admin" in slack.ephemerals("UA2")[-1]
    assert slack.calls_to("views.open") == []

    await bot.events.command("config edit", team_id="TA", channel_id="CA", user_id="UA")
    await bot.settle()
    [opened] = slack.calls_to("views.open")
    assert opened.token == slack.tokens_of("TA")[0] and opened.params["trigger_id"]
    view = (
        json.loads(opened.params["view"])
        if isinstance(opened.params["view"], str)
        else opened.params["view"]
    )
    assert [b["block_id"] for b in view["blocks"]] == list(config_command.NAMES)

    form = "application/x-www-form-urlencoded"
    refused = await bot.events.send(
        submission("TA", "UA", {"parallel_calls": "many", "daily_tokens": "7"}), form
    )
    assert refused.json()["response_action"] == "errors"
    assert "whole number" in refused.json()["errors"]["parallel_calls"]
    assert await book.effective("TA") == book.defaults  # nothing saved from a bad form
    intruder = await bot.events.send(submission("TA", "UA2", {"parallel_calls": "2"}), form)
    assert intruder.json()["response_action"] == "errors"
    assert await book.effective("TA") == book.defaults

    saved = await bot.events.send(
        submission("TA", "UA", {"parallel_calls": "4", "daily_tokens": ""}), form
    )
    assert saved.status == 200 and saved.body == ""
    current = await book.effective("TA")
    assert current.max_parallel_calls == 4 and current.chosen == {"max_parallel_calls"}
    assert await book.effective("TB") == book.defaults


async def test_one_workspace_mode_also_stops_its_runs_when_uninstalled(bot, slack, llm_server):
    slack.add_message("C1", "Something to read.", user="U1")
    llm_server.root_latency = 30.0
    await bot.events.command("ask what is here?")
    await wait_for_status(bot, "T1", "running")
    await bot.events.event({"type": "app_uninstalled"}, team_id="T1")
    await bot.settle(10)
    llm_server.root_latency = 0.0
    assert [r.status for r in await bot.store.list_runs()] == ["interrupted"]
    assert bot.services.oauth is None
    due = await bot.services.tenants.rows.due_uninstalls(datetime.now(UTC) + timedelta(days=91))
    assert due == [("T1", False)]
