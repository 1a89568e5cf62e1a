"""Progress replies: coalescing, pacing and answer splitting, posted to the loopback Slack."""

from __future__ import annotations

from slack_server import BOT_TOKEN

from bot import messages
from bot.progress import ChannelPacer, ProgressReporter, split_message
from bot.slack_api import SlackPoster, is_slack_host, make_web_client
from rlm import CodeExecuted, IterationFinished, SubcallProgress


def reporter_for(slack, interval: float) -> ProgressReporter:
    poster = SlackPoster(make_web_client(BOT_TOKEN, slack.api_url))
    return ProgressReporter(
        poster=poster, pacer=ChannelPacer(interval), channel="C1", thread_ts="1.000001"
    )


async def test_notes_within_one_interval_become_one_post_and_maps_show_their_latest_count(slack):
    reporter = reporter_for(slack, interval=0.3)
    reporter.note("reading", "Reading…")
    for done in range(1, 21):
        reporter.on_event(SubcallProgress(iteration=1, done=done, total=40, failed=0))
    reporter.on_event(CodeExecuted(iteration=1, code="1/0", output="", seconds=0.1, error=True))
    await reporter.drain()
    for done in range(21, 31):
        reporter.on_event(SubcallProgress(iteration=1, done=done, total=40, failed=2))
    await reporter.drain()

    calls = slack.calls_to("chat.postMessage")
    assert [c.params["text"] for c in calls] == [
        "\n".join(["Reading…", messages.map_progress(1, 20, 40, 0), messages.code_failed(1)]),
        messages.map_progress(1, 30, 40, 2),
    ]
    assert all(c.params["thread_ts"] == "1.000001" for c in calls)
    assert calls[1].at - calls[0].at >= 0.28


async def test_short_maps_are_not_reported_and_iterations_say_what_ran(slack):
    reporter = reporter_for(slack, interval=0.0)
    reporter.on_event(SubcallProgress(iteration=1, done=1, total=3, failed=0))
    reporter.on_event(
        IterationFinished(
            iteration=2,
            root_reply="...",
            code_blocks=("chunks = context[0].split('\\n')\nprint(len(chunks))", "x = 1"),
            outputs=("12", ""),
            subcalls=12,
            input_tokens=100,
            output_tokens=20,
            seconds=3.14,
        )
    )
    await reporter.drain()
    [call] = slack.calls_to("chat.postMessage")
    assert call.params["text"] == (
        "Step 2: ran 2 code blocks (`chunks = context[0].split('\\n')`), 12 sub-calls — 3.1 s"
    )


async def test_the_answer_comes_last_split_with_the_footer_once(slack):
    reporter = reporter_for(slack, interval=0.0)
    reporter.note("reading", "Reading…")
    footer = messages.answer_footer(iterations=2, subcalls=5, tokens=1234, seconds=2.5, run_id=7)
    await reporter.answer("para one. " * 500, footer)
    texts = [c.params["text"] for c in slack.calls_to("chat.postMessage")]
    assert texts[0] == "Reading…"
    assert len(texts) == 3 and all(len(t) <= 3500 for t in texts)
    assert texts[-1].endswith("_2 iterations · 5 sub-calls · 1,234 tokens · 2.5 s · run 7_")
    words = " ".join(texts[1:]).split()
    assert words[:1000] == ["para", "one."] * 500


def test_split_message_keeps_every_word_and_cuts_at_paragraphs():
    text = "\n\n".join(f"Paragraph {i}. " + "word " * 150 for i in range(20))
    parts = split_message(text, limit=1000)
    assert all(len(p) <= 1000 for p in parts)
    assert " ".join(" ".join(parts).split()) == " ".join(text.split())
    assert all(p.startswith("Paragraph") for p in parts)


def test_split_message_closes_and_reopens_a_cut_code_block():
    text = "Here:\n```\n" + "\n".join(f"line {i}" for i in range(300)) + "\n```\nDone."
    parts = split_message(text, limit=500)
    assert len(parts) > 2
    for part in parts:
        assert part.count("```") % 2 == 0, part
    assert parts[-1].endswith("Done.")


def test_split_message_cuts_an_unbroken_run_of_text():
    parts = split_message("x" * 2500, limit=1000)
    assert "".join(parts) == "x" * 2500 and all(len(p) <= 1000 for p in parts)


def test_the_token_goes_only_to_slack_or_the_configured_api_origin():
    api = "http://127.0.0.1:8123/api/"
    assert is_slack_host("https://files.slack.com/files-pri/T1-F1/a.txt", api)
    assert is_slack_host("http://127.0.0.1:8123/files-pri/F1/a.txt", api)
    assert not is_slack_host("http://files.slack.com/a.txt", api)  # not over HTTPS
    assert not is_slack_host("https://files.slack.com.evil.example/a.txt", api)
    assert not is_slack_host("https://evilslack.com/a.txt", api)
    assert not is_slack_host("http://127.0.0.1:9999/files-pri/F1/a.txt", api)  # other port
