"""The door of /slack/events over real HTTP: strangers are refused from the headers (401)
without a traceback and logged once per interval; signed but odd bodies answer 400 or are
handled, never 500; the OAuth pages, which Slack does not sign, still work."""

from __future__ import annotations

import json
import logging
import time
import urllib.parse

import aiohttp
import pytest
from bot_harness import block_action, mention
from slack_server import BOT_USER

from bot.ops.verify import RequestStats
from bot.presence import blocks

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"


def event_body(event: dict, **top: object) -> dict:
    return {
        "token": "legacy",
        "team_id": "T1",
        "api_app_id": "A1",
        "event": event,
        "type": "event_callback",
        "event_id": f"Ev{time.monotonic_ns()}",
        "event_time": int(time.time()),
        "authorizations": [{"team_id": "T1", "user_id": BOT_USER, "is_bot": True}],
        **top,
    }


def form(**fields: str) -> str:
    return urllib.parse.urlencode(fields)


def command_form(**fields: str) -> str:
    base = {"team_id": "T1", "channel_id": "C1", "user_id": "U1", "command": "/rlm"}
    return form(**{**base, "text": "help", **fields})


async def post_raw(url: str, data: bytes, headers: dict[str, str]) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=data, headers=headers) as response:
            return response.status, await response.text()


ODD_SIGNED = {
    "a JSON list": ("[1, 2, 3]", JSON),
    "a JSON string": ('"hello"', JSON),
    "not JSON at all": ("{not json", JSON),
    "NUL in team_id": (json.dumps(event_body(mention("C1", "hi", "1.1"), team_id="T1\x00")), JSON),
    "a lone surrogate in thread_ts": (
        json.dumps(event_body(mention("C1", "hi", "1.1", thread_ts="\ud800"))),
        JSON,
    ),
    "a lone surrogate in the text": (json.dumps(event_body(mention("C1", "\udfff", "1.1"))), JSON),
    "event not an object": (json.dumps(event_body("app_mention")), JSON),  # type: ignore[arg-type]
    "event without a type": (json.dumps(event_body({"channel": "C1", "ts": "1.1"})), JSON),
    "channel a number": (
        json.dumps(event_body({**mention("C1", "hi", "1.1"), "channel": 5})),
        JSON,
    ),
    "ts not a timestamp": (json.dumps(event_body(mention("C1", "hi", "yesterday"))), JSON),
    "authorizations an object": (
        json.dumps(event_body(mention("C1", "hi", "1.1"), authorizations={"team_id": "T1"})),
        JSON,
    ),
    "authorizations of numbers": (
        json.dumps(event_body(mention("C1", "hi", "1.1"), authorizations=[5])),
        JSON,
    ),
    "team a list": (json.dumps(block_action(blocks.CANCEL, 1) | {"team": ["T1"]}), JSON),
    "an integer of 5000 digits": ('{"type": "x", "n": ' + "9" * 5000 + "}", JSON),
    "nested 100000 deep": ("[" * 100_000 + "]" * 100_000, JSON),
    "nested 100000 deep in an object": ('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", JSON),
    "a form payload that is not JSON": (form(payload="not json"), FORM),
    "a form payload that is a list": (form(payload="[1]"), FORM),
    "a form payload that is a number": (form(payload="12"), FORM),
    "a command without team_id": (form(channel_id="C1", user_id="U1", command="/rlm"), FORM),
    "a command with NUL in channel_id": (command_form(channel_id="C\x001"), FORM),
    "actions not a list": (
        form(payload=json.dumps(block_action(blocks.CANCEL, 1) | {"actions": "cancel"})),
        FORM,
    ),
}


@pytest.mark.parametrize("name", list(ODD_SIGNED))
async def test_signed_odd_bodies_answer_400_without_a_traceback(bot, slack, caplog, name):
    caplog.set_level(logging.DEBUG)
    body, content_type = ODD_SIGNED[name]
    reply = await bot.events.send(body, content_type)
    assert reply.status == 400, reply.body
    await bot.settle()
    assert "Traceback" not in caplog.text and not [
        r for r in caplog.records if r.levelno >= logging.ERROR
    ]
    assert bot.http.stats.counts["malformed"] == 1
    assert slack.posts() == [] and await bot.store.list_runs() == []


async def test_signed_bytes_that_are_not_utf8_are_a_400(bot):
    raw = b'{"type": "event_callback", "x": "\xff\xfe"}'
    ts = str(int(time.time()))
    import hashlib
    import hmac

    digest = hmac.new(
        bot.settings.slack_signing_secret.encode(),
        b"v0:" + ts.encode() + b":" + raw,
        hashlib.sha256,
    )
    headers = {
        "Content-Type": JSON,
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": "v0=" + digest.hexdigest(),
    }
    status, _ = await post_raw(bot.http.url, raw, headers)
    assert status == 400


@pytest.mark.parametrize(
    "value", [str(10**40), "-1", "0", "1e3", "x" * 5000, "9" * 5000], ids=lambda v: v[:12]
)
async def test_a_button_with_an_odd_value_is_handled(bot, slack, caplog, value):
    caplog.set_level(logging.WARNING)
    payload = block_action(blocks.CANCEL, 1, message_ts="1.1")
    payload["actions"][0]["value"] = value
    reply = await bot.events.action(payload)
    assert reply.status == 200
    await bot.settle()
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_body_without_a_type_is_not_a_500(bot):
    reply = await bot.events.send(json.dumps({"team_id": "T1"}), JSON)
    assert reply.status in (400, 404)  # Bolt: no listener for it


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Slack-Request-Timestamp": "abc", "X-Slack-Signature": "v0=" + "0" * 64},
        {"X-Slack-Request-Timestamp": "1" * 40, "X-Slack-Signature": "v0=" + "0" * 64},
        {"X-Slack-Request-Timestamp": str(int(time.time())), "X-Slack-Signature": "v1=x"},
        {"X-Slack-Request-Timestamp": str(int(time.time()))},
    ],
    ids=["none", "ts-letters", "ts-huge", "sig-malformed", "sig-missing"],
)
async def test_unsigned_or_malformed_headers_get_401_without_a_traceback(bot, caplog, headers):
    caplog.set_level(logging.DEBUG)
    status, _ = await post_raw(bot.http.url, b"{not json", {"Content-Type": JSON, **headers})
    assert status == 401
    assert "Traceback" not in caplog.text


async def test_a_flood_of_strangers_is_counted_and_logged_once(bot, slack, caplog):
    caplog.set_level(logging.INFO)
    forged = {
        "X-Slack-Request-Timestamp": str(int(time.time())),
        "X-Slack-Signature": "v0=" + "a" * 64,
    }
    async with aiohttp.ClientSession() as session:
        for i in range(150):
            headers = {"Content-Type": JSON, **(forged if i % 2 else {})}
            async with session.post(bot.http.url, data=b"{broken" * 10, headers=headers) as r:
                assert r.status == 401
    assert (await bot.events.command("help")).status == 200  # Slack itself still gets in
    stats = bot.http.stats
    assert (stats.counts["unsigned"], stats.counts["bad_signature"]) == (75, 75)
    assert stats.counts["accepted"] == 1
    lines = [r for r in caplog.records if r.name == "bot.http"]
    assert (
        len(lines) == 1 and "refused a request to /slack/events: unsigned" in lines[0].getMessage()
    )
    stats.flush()
    summary = [r.getMessage() for r in caplog.records if r.name == "bot.http"][-1]
    assert "refused 149 request(s)" in summary and "75 bad signature, 74 unsigned" in summary
    assert "broken" not in caplog.text


def test_refusals_are_summed_up_once_per_interval(caplog):
    caplog.set_level(logging.WARNING, logger="bot.http")
    stats = RequestStats(interval=0.05)
    for _ in range(10):
        stats.refused("unsigned")
    assert len(caplog.records) == 1
    time.sleep(0.06)
    stats.refused("stale")
    assert len(caplog.records) == 2
    assert "refused 10 request(s)" in caplog.records[1].getMessage()
    assert "9 unsigned, 1 stale" in caplog.records[1].getMessage()
    stats.flush()  # nothing left to tell
    assert len(caplog.records) == 2
    assert stats.counts == {"unsigned": 10, "stale": 1}


class _Socket:
    """Stands in for Slack's end of the Socket Mode websocket: keeps the acks sent."""

    def __init__(self) -> None:
        self.acks: list[str] = []
        self.logger = logging.getLogger("test.socket")

    async def send_socket_mode_response(self, response) -> None:
        self.acks.append(response.envelope_id)


async def test_socket_mode_checks_the_same_shapes(bot, slack):

    from bot.app import build_app
    from bot.ops.socket_mode import CheckedSocketModeHandler

    handler = CheckedSocketModeHandler(build_app(bot.services), "xapp-1-A1-socket-test")
    try:
        await _two_payloads(handler, bot, slack)
    finally:
        await handler.client.close()


async def _two_payloads(handler, bot, slack) -> None:
    from slack_sdk.socket_mode.request import SocketModeRequest

    socket = _Socket()
    odd = event_body(mention("C1", "<@UBOT> hi", "1.1", thread_ts="\ud800"))
    await handler.handle(socket, SocketModeRequest("events_api", "env-odd", odd))
    assert socket.acks == ["env-odd"]  # acknowledged, so Slack does not send it again
    assert handler.stats.counts == {"malformed": 1}
    assert await bot.store.list_runs() == []

    slack.add_message("C1", "Something to read.", user="U2")
    ts = slack.add_message("C1", "<@UBOT> what is there?", user="U1")
    good = event_body(mention("C1", "<@UBOT> what is there?", ts))
    await handler.handle(socket, SocketModeRequest("events_api", "env-good", good))
    await bot.settle()
    assert socket.acks == ["env-odd", "env-good"]
    assert handler.stats.counts == {"malformed": 1, "accepted": 1}
    assert [r.status for r in await bot.store.list_runs()] == ["finished"]
