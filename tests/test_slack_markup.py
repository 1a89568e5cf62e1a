"""Model-written Markdown made harmless for Slack (bot/markup.py, bot/answer_parts.py):
code found by a CommonMark parser, Slack markup inert on every rendering, a bounded number of
parts with the rest for one file."""

from __future__ import annotations

import pytest
from slack_markup import CORPUS, markup_in

from bot.presence import render
from bot.presence.answer_parts import MAX_ANSWER_PARTS, render_answer
from bot.presence.render import MARKDOWN_BLOCK_LIMIT
from bot.slack import markup

LT = markup.LOOKALIKE_LT
# Each case alone, so that no fence left open by one swallows the next.
CASES = [case for case in CORPUS.split("\n\n") if case.strip()]


def test_the_corpus_holds_markup_and_no_rendering_lets_any_through():
    assert len(markup_in([CORPUS])) > 30  # the checker finds what it must
    for text in [CORPUS, *CASES, CORPUS * 30]:
        for links in ({}, {"m1": "https://t.slack.com/archives/C1/p1"}):
            rendered = render_answer(text, links, note="more in the file")
            shown = [p.markdown for p in rendered.parts] + [p.fallback for p in rendered.parts]
            assert markup_in([*shown, rendered.rest]) == [], text[:80]
            assert all(len(p.markdown) <= MARKDOWN_BLOCK_LIMIT for p in rendered.parts)
        assert markup_in([render.for_markdown_block(text, {}), render.to_mrkdwn(text)]) == []


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        # An info string holding a backtick is no fence: the line is text.
        ("``` a`b\n<!here>\n```", "``` a`b\n&lt;!here>\n```"),
        # Indented four spaces: indented code, not a fence.
        ("    ```\n    <!here> a < b\n    ```", f"    ```\n    {LT}!here> a < b\n    ```"),
        # An unclosed fence runs to the end.
        ("```\n<!channel>\n\ntext <@U1>", f"```\n{LT}!channel>\n\ntext {LT}@U1>"),
        # An HTML block is not code; entities stay entities.
        ("<div>\n`<!here>`\n</div>", "&lt;div>\n`&lt;!here>`\n&lt;/div>"),
        ("&lt;!channel&gt;", "&lt;!channel&gt;"),
        # Zero-width characters do not hide markup, in text or in code.
        ("x <!chan\u200bnel> `<\u200b!here>`", f"x &lt;!chan\u200bnel> `{LT}\u200b!here>`"),
        # A line opening with `<!` is an HTML block (CommonMark): text, so escaped whole.
        ("<!x> `<!here>`", "&lt;!x> `&lt;!here>`"),
        # Code spans, in lists and quotes, found where the parser finds them.
        ("- a `<@U1> x < y`\n  > b `<#C1|x>`", f"- a `{LT}@U1> x < y`\n  > b `{LT}#C1|x>`"),
        ("`<https://evil.example|ok>` and `<b>`", f"`{LT}https://evil.example|ok>` and `<b>`"),
        ("<!subteam^S1> <!date^1^{date}|x>", "&lt;!subteam^S1> &lt;!date^1^{date}|x>"),
    ],
)
def test_text_is_escaped_and_only_markup_in_code_becomes_a_look_alike(markdown, expected):
    assert markup.defuse_markdown(markdown) == expected


def test_code_regions_are_the_parsers():
    text = "a `b` c\n\n```py\nx\n```\n\n    y\n"
    regions = [text[s:e] for s, e in markup.code_regions(text)]
    assert regions == ["`b`", "```py\nx\n```", "    y"]


def test_mrkdwn_links_go_only_to_web_addresses_and_never_carry_a_forged_label():
    mrkdwn = render.to_mrkdwn(
        "[x](!channel) [y](https://a.example) [https://slack.com/r](https://evil.example) "
        "[z](https://evil.example|https://slack.com)"
    )
    assert mrkdwn.startswith("[x](!channel) <https://a.example|y> ")
    assert "https://slack.com/r (<https://evil.example>)" in mrkdwn
    assert "<https://evil.example|https://slack.com" not in mrkdwn


def test_a_long_answer_takes_a_bounded_number_of_parts_and_the_rest_is_kept_whole():
    words = [f"word{i}" for i in range(200_000)]
    answer = "\n\n".join(" ".join(words[i : i + 50]) for i in range(0, len(words), 50))
    rendered = render_answer(answer, {}, note="NOTE")
    assert len(rendered.parts) == MAX_ANSWER_PARTS
    assert rendered.parts[-1].markdown.endswith("NOTE")
    shown = " ".join(p.markdown.removesuffix("NOTE") for p in rendered.parts)
    assert " ".join((shown + " " + rendered.rest).split()) == " ".join(words)
    assert render_answer("short", {}, note="NOTE").rest == ""


def test_a_part_that_grows_past_the_block_limit_when_escaped_is_cut_again_not_dropped():
    answer = "<" * 10_000 + " end"
    rendered = render_answer(answer, {})
    assert len(rendered.parts) > 1 and rendered.rest == ""
    assert all(len(p.markdown) <= MARKDOWN_BLOCK_LIMIT for p in rendered.parts)
    assert sum(p.markdown.count("&lt;") for p in rendered.parts) == 10_000


def test_split_is_linear_and_reopens_fences_across_many_parts():
    code = "```python\n" + "\n".join(f"x{i} = {i}" for i in range(200_000)) + "\n```"
    parts = render.split_markdown(code)
    assert len(parts) > 100 and all(len(p) <= render.ANSWER_PART_LIMIT for p in parts)
    assert all(p.startswith("```python\n") and p.endswith("```") for p in parts)
    parts, rest = render.split_markdown_bounded(code, max_parts=2)
    assert len(parts) == 2 and rest.startswith("```python\n")


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        (
            "[https://slack.com/r](https://evil.example)",
            "https://slack.com/r (https://evil.example)",
        ),
        ("![www.bank.com](https://evil.example)", "!www.bank.com (https://evil.example)"),
        (
            "[slack.com][r]\n\n[r]: https://evil.example",
            "slack.com [r]\n\n[r]: https://evil.example",
        ),
        (
            "[see slack.com]\n\n[see slack.com]: https://evil.example",
            "see slack.com\n\nsee slack.com: https://evil.example",
        ),
        ("\\[bank.com](https://evil.example)", "\\bank.com (https://evil.example)"),
        ("[[nested bank.com]](https://evil.example)", "nested bank.com (https://evil.example)"),
        (
            "[the docs](https://example.org) and `[a.com](x)`",
            "[the docs](https://example.org) and `[a.com](x)`",
        ),
    ],
)
def test_a_markdown_link_labelled_with_an_address_is_no_link(markdown, expected):
    assert markup.defuse_markdown(markdown) == expected


def test_unforging_links_is_linear_in_unbalanced_brackets():
    text = "[a" * 50_000 + "b.com]" * 1_000 + "](https://evil.example)"
    assert "[b.com]" not in markup.defuse_markdown(text)
