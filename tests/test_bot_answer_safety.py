"""Answers that cannot hurt Slack, end to end: the adversarial corpus given as the model's
answer through the real app reaches no Slack call as markup (messages, fallbacks, stream
chunks, the Show steps modal, uploaded files); a huge answer posts a bounded number of
messages plus one file, and the app keeps acknowledging commands while it is rendered."""

from __future__ import annotations

import asyncio
import base64

from bot_harness import block_action
from slack_markup import CORPUS, markup_in, strings

from bot.presence import blocks
from bot.presence.answer_parts import MAX_ANSWER_PARTS
from bot.presence.run import RunPresence
from bot.slack import messages

ASKED = "*<@U1> asked:*"


def answer_with(text: str) -> tuple[str, str]:
    """Root replies that make `text` the answer (base64: the corpus holds code fences)."""
    encoded = base64.b64encode(text.encode()).decode()
    return (
        "Building the answer <!here>.\n```repl\nimport base64\n"
        f"final_answer = base64.b64decode('{encoded}').decode()\nprint('<!channel>')\n```",
        "FINAL_VAR(final_answer)",
    )


def everything_sent(slack) -> list[str]:
    texts = [s for call in slack.calls for s in strings(call.params)]
    texts += [u["content"].decode() for u in slack.uploads.values() if u["content"] is not None]
    return texts + [s for view in slack.views for s in strings(view)]


async def test_no_markup_from_the_model_reaches_any_slack_call(bot, slack, llm_server):
    slack.add_message("C1", "something to read", user="U2")
    slack.streaming = True
    short = "\n\n".join(CORPUS.split("\n\n")[:12])  # one part: streamed
    llm_server.script_root(*answer_with(short))
    await bot.events.command("ask a short one")
    await bot.settle()
    assert len(slack.calls_to("chat.startStream")) == 1

    slack.streaming = False
    long = (CORPUS + "\n\n") * 60  # more than the parts a run posts: the rest is a file
    llm_server.script_root(*answer_with(long))
    await bot.events.command("ask a long one")
    await bot.settle()
    runs = sorted(await bot.store.list_runs(), key=lambda r: r.id)
    assert [r.status for r in runs] == ["finished", "finished"]

    for run in runs:  # Show steps, and the trajectory file
        await bot.events.action(block_action(blocks.SHOW_STEPS, run.id, user="U1"))
        await bot.events.action(block_action(blocks.TRAJECTORY, run.id, channel=None))
    await bot.settle()

    uploads = list(slack.uploads.values())
    answer_files = [u for u in uploads if u["name"].endswith("-answer.md")]
    assert len(answer_files) == 1 and answer_files[0]["thread_ts"] == runs[1].thread_ts
    assert answer_files[0]["comment"] == messages.ANSWER_FILE_COMMENT
    assert len([u for u in uploads if u["name"].endswith(".jsonl")]) == 2
    assert len(slack.views) == 2

    sent = everything_sent(slack)
    # The model's text did reach Slack, made inert.
    assert any("&lt;!channel>" in s for s in sent) and any("\u2039!here>" in s for s in sent)
    assert markup_in(sent) == []


async def test_a_huge_answer_posts_a_bounded_number_of_messages_and_one_file(bot, slack):
    """40 MB given to a run's presence on the app's own loop: commands are still
    acknowledged in time, and the thread gets the parts, the rest as one file, the status."""
    root = slack.add_message("C1", "the question", user="U1")
    runner = bot.services.runner
    presence = RunPresence(
        client=bot.services.poster.client,
        pacer=runner.pacer,
        edit_pacer=runner.edit_pacer,
        channel="C1",
        thread_ts=root,
        run_id=99,
        team_id="T1",
        asker="U1",
        edit_interval=0.0,
        streams=runner.streams,
        tick=0,
    )
    paragraph = "A line of the answer <!here> with `code < 1` and more words to read.\n\n"
    huge = paragraph * (40_000_000 // len(paragraph))
    answering = asyncio.create_task(
        presence.answered(answer=huge, footer="_footer_", links={}, summary="done")
    )
    replies = []
    while not answering.done():
        replies.append(await bot.events.command("help"))
        await asyncio.sleep(0.05)
    await answering
    assert replies and all(r.status == 200 and r.seconds < 3 for r in replies)
    print(f"slowest ack while rendering 40 MB: {max(r.seconds for r in replies):.2f} s")

    posted = slack.posts("C1", thread_ts=root)
    assert len(posted) == MAX_ANSWER_PARTS + 1  # the parts and the collapsed status
    [upload] = slack.uploads.values()
    assert upload["name"] == "run-99-answer.md" and len(upload["content"]) > 39_000_000
    assert markup_in(everything_sent(slack)) == []
