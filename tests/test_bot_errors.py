"""Failures told to their audience: users get one sentence and Retry; what only an operator
can fix is logged with the fix and kept on the run for admins."""

from __future__ import annotations

import logging

import pytest

from bot.slack import admin_messages, messages

ASKED = "*<@U1> asked:*"


@pytest.mark.parametrize(
    ("status", "sentence", "kind"),
    [
        (404, messages.SETUP_PROBLEM, "operator:unknown_model"),
        (401, messages.SETUP_PROBLEM, "operator:provider_auth"),
        (500, messages.PROVIDER_DOWN, "user:provider"),
    ],
)
async def test_a_provider_failure_reads_as_one_sentence_for_its_audience(
    make_bot, slack, llm_server, caplog, status, sentence, kind
):
    caplog.set_level(logging.INFO)
    bot = await make_bot(rlm_provider_retries=0)
    slack.add_message("C1", "something to read", user="U2")
    llm_server.fail_next(5, status, kind="root")
    await bot.events.command("ask anything?")
    await bot.settle()

    root = slack.message_with("C1", ASKED)
    [status_message] = slack.thread_view("C1", root["ts"])
    assert status_message["text"] == sentence
    assert "Retry" in status_message["seen"] and "Read 1 message" in status_message["seen"]
    for leak in ("OPENAI_API_KEY", "HTTP", "root-model", "try again in a few minutes"):
        assert leak not in status_message["seen"]
    [run] = await bot.store.list_runs()
    assert run.error_kind == kind and run.status == "failed"
    fix = admin_messages.OPERATOR_FIXES.get(kind)
    if fix:
        assert fix in caplog.text
        assert [r.id for r in await bot.store.operator_problems("T1")] == [run.id]
    else:
        assert "fix:" not in caplog.text
        assert await bot.store.operator_problems("T1") == []
