"""Answers rendered for Slack: pure functions, read without Slack (bot/render.py, bot/blocks.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from slack_runs import check_blocks

from bot.presence import blocks, render
from bot.storage import IterationRecord

LINKS = {"m1": "https://t.slack.com/archives/C1/p1", "f2": "https://t.slack.com/files/U1/F2"}


def test_markdown_becomes_mrkdwn_outside_code_only():
    text = (
        "## Decision\nWe **chose** Friday, see [the plan](https://x.example/p) ~~not Monday~~.\n"
        "- first\n* second\n```python\n## not a heading **kept**\n```"
    )
    assert render.to_mrkdwn(text) == (
        "*Decision*\nWe *chose* Friday, see <https://x.example/p|the plan> ~not Monday~.\n"
        "• first\n• second\n```python\n## not a heading **kept**\n```"
    )


def test_citations_become_links_to_what_they_cite_and_unknown_refs_stay():
    text = "Friday [m1], per the sheet [m1, f2]; and [m9]. Code: `[m1]`\n```\n[m1]\n```"
    linked = render.link_citations(text, LINKS)
    assert linked.startswith(f"Friday [[m1]]({LINKS['m1']}), per the sheet [[m1]]({LINKS['m1']}) ")
    assert f"[[f2]]({LINKS['f2']}); and [m9]." in linked
    assert linked.endswith("```\n[m1]\n```")  # code blocks are left alone
    assert render.cited(text) == ["m1", "f2", "m9"]
    mrkdwn = render.to_mrkdwn("Friday [m1].", LINKS)
    assert mrkdwn == f"Friday <{LINKS['m1']}|[m1]>."


def test_a_pipe_table_becomes_an_aligned_code_block():
    text = "Totals:\n| team | share |\n|:---|---:|\n| **marketing** | 40 |\n| sales | 60 |\nEnd."
    assert render.tables_as_code(text) == (
        "Totals:\n```\nteam       share\n---------  -----\nmarketing  40\nsales      60\n```\nEnd."
    )
    assert render.tables_as_code("a | b\nno rule here") == "a | b\nno rule here"


def test_split_keeps_every_word_cuts_at_paragraphs_and_reopens_code_with_its_language():
    prose = "\n\n".join(f"Paragraph {i}. " + "word " * 150 for i in range(20))
    parts = render.split_markdown(prose, limit=1000)
    assert all(len(p) <= 1000 for p in parts) and len(parts) > 10
    assert " ".join(" ".join(parts).split()) == " ".join(prose.split())
    assert all(p.startswith("Paragraph") for p in parts)

    code = "Here:\n```python\n" + "\n".join(f"x{i} = {i}" for i in range(300)) + "\n```\nDone."
    parts = render.split_markdown(code, limit=500)
    assert len(parts) > 2 and parts[-1].endswith("Done.")
    for part in parts:
        assert part.count("```") % 2 == 0, part
    assert all(p.startswith("```python\n") for p in parts[1:-1])

    assert "".join(render.split_markdown("x" * 2500, limit=1000)) == "x" * 2500
    with pytest.raises(ValueError, match="at least 40"):
        render.split_markdown("text", limit=10)


def test_plan_sentence_is_the_first_sentence_before_the_code():
    reply = "First, I'll **look** at how the context is laid out. Then I map.\n```repl\nx\n```"
    assert render.plan_sentence(reply) == "First, I'll look at how the context is laid out."
    assert render.plan_sentence("```repl\nx\n```") == ""
    assert render.plan_sentence("Let me check:\n```repl\nx\n```") == "Let me check"
    assert len(render.plan_sentence("word " * 100)) == 120


def test_bar_fills_in_proportion():
    assert render.bar(312, 500) == "▓▓▓▓▓▓░░░░ 312/500"
    assert render.bar(0, 0) == "░░░░░░░░░░ 0/0"
    assert render.bar(5, 5, width=5) == "▓▓▓▓▓ 5/5"


def _step(i: int, code: str = "x = 1", output: str = "1") -> IterationRecord:
    return IterationRecord(
        run_id=3,
        iteration=i,
        root_reply=f"Step {i} plan.\n```repl\n{code}\n```",
        code=code,
        output=output,
        subcalls=i,
        input_tokens=10,
        output_tokens=5,
        seconds=1.5,
        created_at=datetime.now(UTC),
    )


def test_the_steps_modal_stays_within_slack_limits_however_long_the_run():
    steps = [_step(i, code="y = 2\n" * 2000, output="z" * 10_000) for i in range(1, 60)]
    view = blocks.steps_modal(3, steps, full=True)
    assert len(view["blocks"]) <= 100 and len(view["title"]["text"]) <= 24
    check_blocks(view["blocks"], limit=100)
    assert view["blocks"][0]["text"]["text"] == (
        "*Step 1* · 1.5 s · 1 part read by the helper model\nStep 1 plan."
    )
    assert view["blocks"][-2]["elements"][0]["text"] == "35 more steps are in the full record."
    assert view["blocks"][-1]["elements"][0]["action_id"] == blocks.TRAJECTORY
    lines = blocks.trajectory_jsonl(steps).splitlines()
    assert len(lines) == 59 and json.loads(lines[0])["code"] == "y = 2\n" * 2000


def test_answer_and_status_blocks_pass_the_limits():
    check_blocks(blocks.answer_blocks(1, "a" * 11_000, "_footer_"))
    check_blocks(blocks.status_blocks(1, "s" * 5000, cancellable=True))
    check_blocks(blocks.summary_blocks(1, "failed", retry=True, detail="read 3 messages"))
    with pytest.raises(Exception, match="invalid_blocks"):
        check_blocks([{"type": "markdown", "text": "a" * 12_001}])
    with pytest.raises(Exception, match="invalid_blocks"):
        check_blocks([{"type": "divider"}] * 51)


async def test_the_loopback_slack_refuses_what_slack_would(slack):
    from slack_sdk.errors import SlackApiError
    from slack_server import BOT_TOKEN

    from bot.slack.api import make_web_client

    client = make_web_client(BOT_TOKEN, slack.api_url)
    refusals = []
    for kwargs in (
        {"text": "x", "blocks": [{"type": "divider"}] * 51},
        {"text": "x", "blocks": [{"type": "markdown", "text": "a" * 12_001}]},
        {"text": "x" * 40_001},
    ):
        try:
            await client.chat_postMessage(channel="C1", **kwargs)
        except SlackApiError as exc:
            refusals.append(exc.response["error"])
    try:
        await client.chat_update(channel="C1", ts="", text="x")
    except SlackApiError as exc:
        refusals.append(exc.response["error"])
    try:
        await client.views_open(trigger_id="", view={"type": "modal"})
    except SlackApiError as exc:
        refusals.append(exc.response["error"])
    assert refusals == [
        "invalid_blocks",
        "invalid_blocks",
        "msg_too_long",
        "invalid_arguments",
        "invalid_arguments",
    ]
    assert slack.posts() == []


def test_slack_markup_written_by_the_model_or_in_the_context_stays_inert():
    answer = "<!channel> see <https://evil.example|your bank> or [x](https://a.example/?b=1&c=2)"
    assert render.to_mrkdwn(answer) == (
        "&lt;!channel&gt; see &lt;https://evil.example|your bank&gt; or "
        "<https://a.example/?b=1&amp;c=2|x>"
    )
    assert render.for_markdown_block(answer, {}).startswith("&lt;!channel> see &lt;https://")
    # In code, only a `<` that could open Slack markup changes, to a look-alike.
    assert render.for_markdown_block("```\n<!here> if a < b\n```", {}) == (
        "```\n\u2039!here> if a < b\n```"
    )
    assert render.plan_sentence("Ping <!here> & <@U1> now.\n```repl\nx\n```") == (
        "Ping &lt;!here &amp; &lt;@U1 now."  # quote marks (>) go with the other markup
    )
    view = blocks.steps_modal(3, [_step(1, code="print('<!channel>')", output="<@U1>")])
    shown = json.dumps(view["blocks"])
    assert "<!channel>" not in shown and "<@U1>" not in shown
