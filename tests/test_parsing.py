from __future__ import annotations

from rlm._parsing import FinalAnswer, find_code_blocks, find_final, truncate


def test_code_blocks_in_order_and_other_fences_ignored() -> None:
    reply = "a\n```repl\nx = 1\n```\n```python\nnot_run()\n```\n```repl\nprint(x)\n```"
    assert find_code_blocks(reply) == ["x = 1", "print(x)"]


def test_unclosed_last_block_runs_to_the_end() -> None:
    assert find_code_blocks("```repl\nprint(1)\nprint(2)") == ["print(1)\nprint(2)"]


def test_final_takes_balanced_parentheses() -> None:
    reply = "Done.\nFINAL(The total is f(g(2)) = (3 + 4) (approx.))"
    assert find_final(reply) == FinalAnswer("text", "The total is f(g(2)) = (3 + 4) (approx.)")


def test_final_ignores_parentheses_inside_quotes_and_apostrophes() -> None:
    assert find_final('FINAL("a ) b")') == FinalAnswer("text", "a ) b")
    assert find_final("FINAL(It's (mostly) done)") == FinalAnswer("text", "It's (mostly) done")


def test_final_spans_lines() -> None:
    assert find_final("FINAL(line one\nline (two))\n") == FinalAnswer(
        "text", "line one\nline (two)"
    )


def test_final_var_and_final_inside_code_are_not_read_from_text() -> None:
    assert find_final("```repl\nFINAL(x)\n```") is None
    assert find_final("x\n  FINAL_VAR(summary)") == FinalAnswer("var", "summary")


def test_final_mentioned_mid_sentence_is_not_an_answer() -> None:
    assert find_final("I will call FINAL(answer) once I know more.") is None


def test_truncate_keeps_head_and_tail_and_says_so() -> None:
    text = "a" * 5000 + "b" * 5000
    out = truncate(text, 1000)
    assert out.startswith("a" * 600) and out.endswith("b" * 300)
    assert "truncated" in out and len(out) < 1200
    assert truncate("short", 1000) == "short"
