"""A run's buttons end to end, clicked as Slack posts them (block_actions to /slack/events):
Cancel (who may, how fast), Show steps and its JSON Lines file, Retry, and 👍/👎."""

from __future__ import annotations

import json
import time

from bot_harness import MAP_EVERY_LINE, block_action, wait_until

from bot.presence import blocks
from bot.slack import messages

ASKED = "*<@U1> asked:*"


def seen(slack, thread_ts: str) -> list[str]:
    return [m["seen"] for m in slack.thread_view("C1", thread_ts)]


def _message(slack, ts: str) -> dict:
    return next(m for m in slack.channels["C1"]["messages"] if m["ts"] == ts)


def clicked_on(slack, thread: str, action: str, run_id: int, user: str, ts: str = "") -> dict:
    """A click as Slack sends it from a message: with the message's ts and blocks (the
    thread's first app message unless `ts` names another)."""
    ts = ts or slack.thread_view("C1", thread)[0]["ts"]
    payload = block_action(action, run_id, user=user, message_ts=ts)
    payload["message"] = {"ts": ts, "blocks": _message(slack, ts).get("blocks", [])}
    return payload


async def _long_map(bot, slack, llm_server) -> tuple[str, int]:
    """Start a run whose map of 40 sub-calls takes long; returns (thread, run id)."""
    for i in range(40):
        slack.add_message("C1", f"line {i}", user="U2")
    llm_server.sub_latency = 2.0
    llm_server.script_root(MAP_EVERY_LINE)
    await bot.events.command("ask summarize everything")
    await wait_until(lambda: llm_server.count("sub") >= 5)
    root = slack.message_with("C1", ASKED)
    [run] = await bot.store.list_runs()
    return root["ts"], run.id


async def test_the_asker_cancels_within_a_second_and_sub_calls_in_flight_are_abandoned(
    bot, slack, llm_server
):
    thread, run_id = await _long_map(bot, slack, llm_server)
    clicked = time.monotonic()
    reply = await bot.events.action(block_action(blocks.CANCEL, run_id, user="U1"))
    assert reply.status == 200
    await wait_until(lambda: any("Cancelled by <@U1>" in s for s in seen(slack, thread)))
    latency = time.monotonic() - clicked
    assert latency < 1.0, f"cancel took {latency:.2f} s"
    subs_at_cancel = llm_server.count("sub")
    await bot.settle()
    assert llm_server.count("sub") <= subs_at_cancel + 10  # at most what was in flight
    [status] = seen(slack, thread)  # no answer was posted
    assert status.startswith(":no_entry_sign: Cancelled by <@U1> after ")
    assert "Retry" in status.split("\n") and "Cancel" not in status.split("\n")
    [run] = await bot.store.list_runs()
    assert (run.status, run.error) == ("stopped", "cancelled by U1")
    assert run.error_kind == "user:cancelled"
    print(f"cancel latency: {latency:.3f} s")


async def test_only_the_asker_or_an_admin_may_cancel(bot, slack, llm_server):
    slack.add_user("U3", "Ada Admin")
    slack.admins.add("U3")
    thread, run_id = await _long_map(bot, slack, llm_server)

    await bot.events.action(block_action(blocks.CANCEL, run_id, user="U2"))
    await wait_until(lambda: messages.CANCEL_NOT_ALLOWED in slack.ephemerals("U2"))
    [run] = await bot.store.list_runs()
    assert run.status == "running"

    await bot.events.action(block_action(blocks.CANCEL, run_id, user="U3"))
    await wait_until(lambda: any("Cancelled by <@U3>" in s for s in seen(slack, thread)))
    await bot.settle()
    [run] = await bot.store.list_runs()
    assert run.status == "stopped"
    # A second click after the end is told there is nothing to cancel.
    await bot.events.action(block_action(blocks.CANCEL, run_id, user="U1"))
    await bot.settle()
    assert messages.RUN_NOT_ACTIVE in slack.ephemerals("U1")


async def test_show_steps_opens_a_modal_and_posts_the_trajectory_file(bot, slack, llm_server):
    slack.add_message("C1", "Standup moved to 10:00.", user="U2")
    llm_server.script_root(
        "Let me look at the context first.\n```repl\nprint(len(context))\n```",
        "FINAL(At 10:00 [m1].)",
    )
    await bot.events.command("ask when is standup?")
    await bot.settle()
    [run] = await bot.store.list_runs()

    reply = await bot.events.action(block_action(blocks.SHOW_STEPS, run.id, user="U2"))
    assert reply.status == 200
    await bot.settle()
    [open_call] = slack.calls_to("views.open")
    assert open_call.params["trigger_id"] == f"trigger-{blocks.SHOW_STEPS}-{run.id}"
    [view] = slack.views  # a member who did not ask: each step's plan and what was read
    texts = json.dumps(view["blocks"])
    assert "*Step 1* \\u00b7 " in texts and "Let me look at the context first." in texts
    assert "Read 1 message" in texts
    assert "print(len(context))" not in texts and blocks.TRAJECTORY not in texts

    await bot.events.action(block_action(blocks.SHOW_STEPS, run.id, user="U1"))  # the asker
    await bot.settle()
    texts = json.dumps(slack.views[-1]["blocks"])
    assert "print(len(context))" in texts and blocks.TRAJECTORY in texts

    # The full record: refused to another member, sent to the asker's DM, never the thread.
    await bot.events.action(block_action(blocks.TRAJECTORY, run.id, user="U2", channel=None))
    await bot.settle()
    assert slack.uploads == {} and messages.RECORD_ONLY_ASKER in slack.ephemerals("U2")
    await bot.events.action(block_action(blocks.TRAJECTORY, run.id, user="U1", channel=None))
    await bot.settle()
    [upload] = slack.uploads.values()
    assert upload["name"] == f"run-{run.id}-trajectory.jsonl"
    assert (upload["channel"], upload["thread_ts"]) == ("DU1", None)
    lines = [json.loads(line) for line in upload["content"].decode().splitlines()]
    assert [s["iteration"] for s in lines] == [1, 2]
    assert lines[0]["code"] == "print(len(context))"
    assert messages.RECORD_SENT in slack.ephemerals("U1")


async def test_retry_runs_a_failed_question_again_in_its_thread_once(make_bot, slack, llm_server):
    bot = await make_bot(rlm_provider_retries=0)
    slack.add_message("C1", "Release 2.0 shipped.", user="U2")
    llm_server.fail_next(1, 500, kind="root")  # the provider fails: the run fails
    await bot.events.command("ask what is new?")
    await bot.settle()
    root = slack.message_with("C1", ASKED)
    [failed] = await bot.store.list_runs()
    assert failed.status == "failed" and "Retry" in seen(slack, root["ts"])[0]

    await bot.events.action(clicked_on(slack, root["ts"], blocks.RETRY, failed.id, "U1"))
    await bot.settle()
    # The failed run's message says it was retried below and has no Retry left.
    old = slack.thread_view("C1", root["ts"])[0]
    assert messages.RETRIED_BELOW in old["seen"] and "Retry" not in old["seen"].split("\n")
    _, second = await bot.store.list_runs()
    assert second.status == "finished" and second.question == "what is new?"
    assert second.thread_ts == root["ts"] and second.scope == "channel"
    view = seen(slack, root["ts"])
    assert len(view) == 3  # the failed run's status, the retry's status and its answer
    assert "Release 2.0 shipped." in view[-1]

    # Clicks are handled after their acknowledgement, each on its own: settle between them
    # so that the replies arrive in the order of the clicks.
    await bot.events.action(block_action(blocks.RETRY, failed.id, user="U1"))
    await bot.settle()
    await bot.events.action(block_action(blocks.RETRY, second.id, user="U1"))
    await bot.settle()
    assert slack.ephemerals("U1") == [messages.RETRY_DONE, messages.RETRY_NOT_ALLOWED]
    assert len(await bot.store.list_runs()) == 2

    # After a restart (nothing remembered in memory) the run is still retried only once.
    await bot.close()
    bot = await make_bot()
    await bot.events.action(block_action(blocks.RETRY, failed.id, user="U2"))
    await bot.settle()
    assert slack.ephemerals("U2") == [messages.RETRY_DONE]
    assert len(await bot.store.list_runs()) == 2


async def test_feedback_is_stored_with_the_run_one_vote_per_user(bot, slack, llm_server):
    slack.add_message("C1", "something to read", user="U2")
    await bot.events.command("ask anything?")
    await bot.settle()
    [run] = await bot.store.list_runs()
    root = slack.message_with("C1", ASKED)
    answer = slack.thread_view("C1", root["ts"])[-1]
    for action, user in (
        (blocks.FEEDBACK_UP, "U1"),
        (blocks.FEEDBACK_DOWN, "U2"),
    ):
        payload = clicked_on(slack, root["ts"], action, run.id, user, answer["ts"])
        assert (await bot.events.action(payload)).status == 200
        await bot.settle()
    # The shared answer shows how many chose each; each clicker is told their own choice.
    labels = [e["text"]["text"] for e in _message(slack, answer["ts"])["blocks"][-1]["elements"]]
    assert labels == [":thumbsup: 1", ":thumbsdown: 1"]
    payload = clicked_on(slack, root["ts"], blocks.FEEDBACK_UP, run.id, "U2", answer["ts"])
    await bot.events.action(payload)
    await bot.settle()
    labels = [e["text"]["text"] for e in _message(slack, answer["ts"])["blocks"][-1]["elements"]]
    assert labels == [":thumbsup: 2", ":thumbsdown:"]
    assert await bot.store.feedback(run.id) == {"U1": "up", "U2": "up"}
    assert slack.ephemerals("U2") == [messages.FEEDBACK_DOWN_THANKS, messages.FEEDBACK_UP_THANKS]


async def test_clicks_about_unknown_or_foreign_runs_change_nothing(bot, slack, llm_server):
    slack.add_channel("C2", "other")
    slack.add_message("C1", "something to read", user="U2")
    await bot.events.command("ask anything?")
    await bot.settle()
    [run] = await bot.store.list_runs()
    for payload in (
        block_action(blocks.FEEDBACK_UP, "not-a-number"),
        block_action(blocks.FEEDBACK_UP, 999),
        block_action(blocks.FEEDBACK_UP, run.id, channel="C2"),  # another channel's button
        block_action(blocks.SHOW_STEPS, run.id, team_id="T2"),  # another workspace
        block_action(blocks.RETRY, run.id, channel="C2"),
    ):
        assert (await bot.events.action(payload)).status == 200
        await bot.settle()
    assert await bot.store.feedback(run.id) == {}
    assert slack.views == [] and len(await bot.store.list_runs()) == 1
    assert slack.ephemerals("U1").count(messages.RUN_GONE) == 5


async def test_a_queued_run_can_be_cancelled_before_it_starts(make_bot, slack, llm_server):
    bot = await make_bot(rlm_max_runs_per_workspace=1)
    slack.add_message("C1", "something to read", user="U2")
    llm_server.root_latency = 1.0
    await bot.events.command("ask first?")
    await wait_until(lambda: llm_server.count("root") == 1)
    await bot.events.command("ask second?", user_id="U2")
    await wait_until(lambda: len(bot.services.runner.active) == 2)
    second = max(bot.services.runner.active)
    await wait_until(lambda: bot.services.runner.active[second].presence.status_ts is not None)

    await bot.events.action(block_action(blocks.CANCEL, second, user="U2"))
    await bot.settle()
    runs = {r.id: r for r in await bot.store.list_runs()}
    assert runs[second].status == "stopped" and runs[second].iterations == 0
    assert [r.status for r in runs.values() if r.id != second] == ["finished"]
    root = slack.message_with("C1", "*<@U2> asked:*")
    [status] = slack.thread_view("C1", root["ts"])
    assert status["text"].startswith(":no_entry_sign: Cancelled by <@U2>")


async def test_a_silent_model_shows_a_ticking_wait_in_the_status(make_bot, slack, llm_server):
    bot = await make_bot(rlm_status_wait_notice=0.3)
    slack.add_message("C1", "something to read", user="U2")
    llm_server.root_latency = 1.5
    llm_server.script_root("FINAL(ok)")
    await bot.events.command("ask anything?")
    await bot.settle()
    shown = "\n".join(str(c.params.get("blocks")) for c in slack.calls_to("chat.update"))
    assert ":hourglass: still waiting for the model (" in shown


async def test_an_answer_is_streamed_where_the_workspace_can(bot, slack, llm_server):
    slack.streaming = True
    slack.add_message("C1", "Standup moved to 10:00.", user="U2")
    llm_server.script_root("FINAL(At **10:00** [m1].)")
    await bot.events.command("ask when is standup?")
    await bot.settle()
    root = slack.message_with("C1", ASKED)
    status, answer = slack.thread_view("C1", root["ts"])
    assert len(slack.calls_to("chat.startStream")) == 1
    assert answer["text"].startswith("At **10:00** [[m1]](https://test.slack.com/archives/C1/p")
    assert ":thumbsup:" in answer["seen"] and "_1 step · " in answer["seen"]
    assert status["seen"].startswith(":white_check_mark: Answered in 1 step")


async def test_the_trajectory_goes_only_to_an_upload_url_on_slack(bot, slack, llm_server):
    slack.add_message("C1", "something to read", user="U2")
    await bot.events.command("ask anything?")
    await bot.settle()
    [run] = await bot.store.list_runs()
    # A loopback address on another port stands in for a host that is not Slack.
    slack.upload_url_base = "http://127.0.0.1:9/upload"
    await bot.events.action(block_action(blocks.TRAJECTORY, run.id, channel=None))
    await bot.settle()
    assert len(slack.calls_to("files.getUploadURLExternal")) == 1
    assert slack.calls_to("files.completeUploadExternal") == []
    assert [u["content"] for u in slack.uploads.values()] == [None]  # nothing was sent
