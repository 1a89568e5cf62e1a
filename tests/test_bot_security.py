"""Request security and logs: signatures inside Slack's 5-minute window only, a body size
limit enforced before Bolt, and no token, secret or key in any log line (nor, at INFO, what
people wrote)."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import time
import urllib.parse

import aiohttp
import pytest
from bot_harness import SlackEvents, file_shared, harness_settings, mention, wait_until
from slack_server import BOT_TOKEN, SIGNING_SECRET

from bot.__main__ import serve
from bot.ops.http_server import DEFAULT_MAX_REQUEST_BYTES, TOO_LARGE
from bot.ops.logs import REDACTED, QuietLibraries, RedactingFilter, configure_logging
from bot.slack import messages

PROVIDER_KEY = "sk-proj-provider-key-0451"
# What people paste into Slack by mistake: shaped like credentials, never configured here.
PASTED = ("xoxp-1111-2222-pasted-user-token", "sk-ant-pasted-key-0451", "xapp-1-A1-pasted-app")
SECRETS = (BOT_TOKEN, SIGNING_SECRET, PROVIDER_KEY, *PASTED)


def help_body(**extra: str) -> str:
    form = {"team_id": "T1", "channel_id": "C1", "user_id": "U1", "command": "/rlm"}
    return urllib.parse.urlencode({**form, "text": "help", **extra})


FORM = "application/x-www-form-urlencoded"


# -- signatures -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("age", "status"),
    [(0, 200), (290, 200), (301, 401), (3600, 401), (-301, 401)],
    ids=["now", "within-5-min", "just-past-5-min", "an-hour-old", "from-the-future"],
)
async def test_only_requests_signed_within_five_minutes_are_accepted(bot, slack, age, status):
    body = help_body()
    headers = bot.events.sign(body, timestamp=int(time.time()) - age)
    reply = await bot.events.send(body, FORM, headers)
    assert reply.status == status
    if status == 200:
        assert reply.json()["text"] == messages.USAGE


async def test_a_captured_request_replayed_after_the_window_is_refused(bot, slack):
    # The same bytes and headers Slack sent, signed correctly 6 minutes ago.
    slack.add_message("C1", "something to read", user="U2")
    body = urllib.parse.urlencode(
        {"team_id": "T1", "channel_id": "C1", "user_id": "U1", "command": "/rlm",
         "text": "ask anything?", "response_url": f"{slack.url}/response/1"}
    )  # fmt: skip
    captured = bot.events.sign(body, timestamp=int(time.time()) - 360)
    assert (await bot.events.send(body, FORM, captured)).status == 401
    await bot.settle()
    assert slack.posts() == [] and await bot.store.list_runs() == []


async def test_forged_tampered_or_unsigned_requests_are_refused(bot, slack):
    body = help_body()
    forger = SlackEvents(bot.http.url, signing_secret="not-the-secret")
    try:
        assert (await forger.send(body, FORM)).status == 401
    finally:
        await forger.close()
    tampered = bot.events.sign(help_body(user_id="U2"))
    assert (await bot.events.send(body, FORM, tampered)).status == 401
    async with aiohttp.ClientSession() as session:
        headers = {"Content-Type": FORM}
        async with session.post(bot.http.url, data=body, headers=headers) as response:
            assert response.status == 401
    await bot.settle()
    assert slack.calls_to("chat.postMessage") == []


# -- body size --------------------------------------------------------------------------------


async def test_a_body_over_the_limit_is_refused_before_bolt_reads_it(bot, slack, caplog):
    caplog.set_level(logging.WARNING, logger="bot.http")
    padding = "x" * DEFAULT_MAX_REQUEST_BYTES
    big = help_body(padding=padding)
    reply = await bot.events.send(big, FORM)  # correctly signed: only its size is wrong
    assert (reply.status, reply.body) == (413, TOO_LARGE)

    async def chunks():
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536].encode()

    async with aiohttp.ClientSession() as session:
        headers = {"Content-Type": FORM, **bot.events.sign(big)}
        async with session.post(bot.http.url, data=chunks(), headers=headers) as response:
            assert response.status == 413  # no Content-Length: cut off at the limit
    under = help_body(padding="x" * 10_000)
    assert (await bot.events.send(under, FORM)).status == 200
    assert bot.http.stats.counts["too_large"] == 2
    # The first refusal is logged at once with why; the second waits for the minute's summary.
    assert "refused a request to /slack/events: too large (1048" in caplog.text
    assert "longer than the limit" not in caplog.text
    bot.http.stats.flush()
    assert "refused 1 request(s) to /slack/events in the last" in caplog.text
    assert "x" * 100 not in caplog.text


async def test_rlm_max_request_bytes_sets_the_limit(slack, llm_server, database_url, caplog):
    caplog.set_level(logging.INFO, logger="bot")
    settings = harness_settings(
        slack_api_url=slack.api_url,
        openai_base_url=llm_server.openai_base_url,
        database_url=database_url,
        port=0,
        rlm_http_host="127.0.0.1",
        rlm_max_request_bytes=2048,
    )
    stop = asyncio.Event()
    serving = asyncio.create_task(serve(settings, stop))
    await wait_until(lambda: "listening on port" in caplog.text, seconds=20)
    port = re.findall(r"listening on port (\d+)", caplog.text)[0]
    events = SlackEvents(f"http://127.0.0.1:{port}/slack/events")
    try:
        assert (await events.send(help_body(padding="x" * 3000), FORM)).status == 413
        assert (await events.send(help_body(padding="x" * 1000), FORM)).status == 200
    finally:
        await events.close()
        stop.set()
        await asyncio.wait_for(serving, 20)


# -- logs -------------------------------------------------------------------------------------


def _record(msg: str, *args: object, **kw: object) -> logging.LogRecord:
    return logging.LogRecord("test", logging.INFO, __file__, 1, msg, args, None, **kw)


def test_the_filter_redacts_messages_arguments_tracebacks_and_stacks():
    redactor = RedactingFilter(["configured-signing-secret", "short"])
    formatter = logging.Formatter()
    record = _record("token %s and %r", "xoxb-123-456-abc", {"key": "sk-live-abcdefgh"})
    redactor.filter(record)
    assert record.getMessage() == f"token {REDACTED} and {{'key': '{REDACTED}'}}"

    try:
        raise RuntimeError("refused: configured-signing-secret, xapp-1-A2-zz, xoxe.xoxp-1-abc")
    except RuntimeError:
        import sys

        failed = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    failed.stack_info = "Stack (most recent call last):\n  secret = 'AIza" + "b" * 35 + "'"
    redactor.filter(failed)
    text = formatter.format(failed)
    assert "configured-signing-secret" not in text and "xapp-1" not in text
    assert "xoxe" not in text and "AIza" not in text
    assert f"RuntimeError: refused: {REDACTED}, {REDACTED}, {REDACTED}" in text
    assert text.endswith(f"secret = '{REDACTED}'")

    plain = _record("nothing to hide in %d %s", 3, "short words")  # short: not a credential
    redactor.filter(plain)
    assert plain.args == (3, "short words")


def test_configure_logging_puts_the_filters_on_every_handler_once():
    logger = logging.getLogger("test.configure")
    first, second = logging.StreamHandler(io.StringIO()), logging.StreamHandler(io.StringIO())
    logger.addHandler(first)
    logger.addHandler(second)
    try:
        assert configure_logging("INFO", ["a-secret-value"], logger=logger) == 2
        configure_logging("INFO", ["another-secret"], logger=logger)
        for handler in (first, second):
            kinds = sorted(type(f).__name__ for f in handler.filters)
            assert kinds == ["QuietLibraries", "RedactingFilter"]
        configure_logging("DEBUG", ["x-secret-value"], logger=logger)
        assert [type(f) for f in first.filters] == [RedactingFilter]
    finally:
        logger.removeHandler(first)
        logger.removeHandler(second)


def test_library_body_logging_is_dropped_below_warning():
    quiet = QuietLibraries()
    for name, level, kept in [
        ("slack_bolt.AsyncApp", logging.INFO, False),
        ("slack_sdk.web.async_base_client", logging.DEBUG, False),
        ("slack_sdk", logging.WARNING, True),
        ("slack_bolty", logging.INFO, True),
        ("bot.runner", logging.INFO, True),
    ]:
        record = logging.LogRecord(name, level, __file__, 1, "body: {...}", (), None)
        assert quiet.filter(record) is kept, name


@pytest.fixture
def root_log():
    """Everything logged anywhere, at DEBUG, through a handler on the root logger."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield stream
    finally:
        root.removeHandler(handler)


async def _busy_workspace(bot, slack, llm_server) -> None:
    """A question, a file and a provider hiccup, with credentials pasted into the channel."""
    slack.add_message("C1", "The launch is on Friday, says the zebra memo.", user="U1")
    slack.add_message("C1", f"oops, my keys: {PASTED[0]} {PASTED[1]} {PASTED[2]}", user="U2")
    slack.add_file("F1", "notes.txt", b"platypus budget notes\n", channel_id="C1", user="U1")
    await bot.events.event(file_shared("C1", "F1"))
    await bot.settle()
    llm_server.fail_next(1, 500)
    await bot.events.command("ask what did the quokka decide?")
    await bot.settle()
    assert (await bot.store.list_runs())[0].status == "finished"


async def test_no_secret_reaches_any_log_line_even_at_debug(
    make_bot, slack, llm_server, root_log, caplog
):
    caplog.set_level(logging.DEBUG)
    bot = await make_bot(rlm_log_level="DEBUG", openai_api_key=PROVIDER_KEY)
    await _busy_workspace(bot, slack, llm_server)
    await bot.close()

    logged = root_log.getvalue() + caplog.text
    # DEBUG really was on, libraries included: Slack's replies were logged whole.
    assert "slack_sdk" in logged and "zebra memo" in logged
    leaked = [s for s in SECRETS if s in logged]
    assert leaked == []
    assert REDACTED in logged


async def test_at_info_the_logs_hold_no_message_or_file_text(make_bot, slack, llm_server, caplog):
    caplog.set_level(logging.INFO)
    bot = await make_bot(openai_api_key=PROVIDER_KEY)
    await _busy_workspace(bot, slack, llm_server)
    # Bolt logs the whole body of a request whose signature fails, at INFO.
    forger = SlackEvents(bot.http.url, signing_secret="not-the-secret")
    try:
        event = mention("C1", "<@UBOT> walrus plans, anyone?", slack.next_ts())
        assert (await forger.event(event)).status == 401
    finally:
        await forger.close()
    assert "run 1 finished" in caplog.text and "kept file F1" in caplog.text
    for words in ("zebra", "platypus", "quokka", "oops", "pasted", "launch", "walrus"):
        assert words not in caplog.text.lower()
    assert not [s for s in SECRETS if s in caplog.text]
