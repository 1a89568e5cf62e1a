"""The RLM loop with a scripted root model and the real REPL worker."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Sequence

import pytest

from rlm import (
    RLM,
    CodeExecuted,
    ConfigurationError,
    Event,
    IterationFinished,
    IterationStarted,
    RootReplied,
    RunFinished,
    SubcallProgress,
    write_trajectory_jsonl,
)
from rlm.clients._base import Message
from tests.scripted_llm import ScriptedLLM, repl


def test_final_var_names_a_variable_built_in_the_same_reply() -> None:
    root = ScriptedLLM(
        repl("words = context.split()\nanswer = str(len(words))", "FINAL_VAR(answer)")
    )
    answer, trajectory = RLM(root).query("How many words?", "one two three")
    assert answer == "3"
    assert len(trajectory) == 1
    assert trajectory[0]["code_blocks"] == ["words = context.split()\nanswer = str(len(words))"]


def test_final_with_nested_parentheses() -> None:
    root = ScriptedLLM(repl("print(1)", "FINAL(f(x) = (x + 1) (for all x))"))
    assert RLM(root).query("q", "c")[0] == "f(x) = (x + 1) (for all x)"


def test_final_var_of_a_missing_variable_is_fed_back_not_accepted() -> None:
    root = ScriptedLLM("FINAL_VAR(nowhere)", repl("nowhere = 'found it'", "FINAL_VAR(nowhere)"))
    answer, trajectory = RLM(root).query("q", "c")
    assert answer == "found it"
    assert len(trajectory) == 2
    feedback = root.seen[1][-1]["content"]
    assert "FINAL_VAR(nowhere)" in feedback and "does not exist" in feedback


def test_final_called_inside_code_ends_the_run() -> None:
    root = ScriptedLLM(repl("total = 40 + 2\nFINAL_VAR('total')"), repl("FINAL('unused')"))
    assert RLM(root).query("q", "c")[0] == "42"


def test_output_is_fed_back_and_truncated_with_a_note() -> None:
    root = ScriptedLLM(repl("print('z' * 50_000)"), "FINAL(done)")
    answer, _ = RLM(root, max_output_chars=5000).query("q", "c")
    fed_back = root.seen[1][-1]["content"]
    assert answer == "done"
    assert "truncated" in fed_back and len(fed_back) < 7000


def test_running_out_of_iterations_asks_for_the_best_answer() -> None:
    root = ScriptedLLM(repl("x = 1"), repl("x += 1"), "FINAL(best guess: 2)")
    finished: list[RunFinished] = []
    answer, trajectory = RLM(root, max_iterations=2).query(
        "q", "c", on_event=lambda e: finished.append(e) if isinstance(e, RunFinished) else None
    )
    assert answer == "best guess: 2"
    assert "No more code will run" in root.seen[2][-1]["content"]
    assert len(trajectory) == 3
    assert finished[0].stopped_by == "max_iterations"


def test_parallel_query_keeps_input_order_and_counts_subcalls() -> None:
    sub = ScriptedLLM(fallback=lambda p: p.upper())
    code = "out = parallel_query('say {chunk} {not a placeholder}', [str(i) for i in range(30)])"
    root = ScriptedLLM(repl(code, "FINAL_VAR(out)"))
    answer, trajectory = RLM(root, sub, max_parallel_calls=4).query("q", "c")
    expected = [f"SAY {i} {{NOT A PLACEHOLDER}}" for i in range(30)]
    assert answer == str(expected)
    assert trajectory[0]["subcalls"] == 30


def test_subcall_tokens_are_in_the_iteration_and_the_totals() -> None:
    root = ScriptedLLM(repl("r = llm_query('hi')", "FINAL_VAR(r)"))
    finished: list[Event] = []
    _, trajectory = RLM(root, ScriptedLLM()).query("q", "c", on_event=finished.append)
    assert trajectory[0]["input_tokens"] == 20 and trajectory[0]["output_tokens"] == 10
    done = next(e for e in finished if isinstance(e, RunFinished))
    assert (done.subcalls, done.input_tokens, done.output_tokens) == (1, 20, 10)


def test_events_arrive_in_order() -> None:
    events: list[Event] = []
    root = ScriptedLLM(repl("r = parallel_query('{chunk}', ['a', 'b', 'c'])"), "FINAL(ok)")
    RLM(root, ScriptedLLM()).query("q", "c", on_event=events.append)
    kinds = [type(e) for e in events]
    assert kinds[0] is IterationStarted and kinds[-1] is RunFinished
    progress = [e for e in events if isinstance(e, SubcallProgress)]
    assert [p.done for p in progress] == [1, 2, 3] and {p.total for p in progress} == {3}
    assert kinds.index(SubcallProgress) < kinds.index(CodeExecuted) < kinds.index(IterationFinished)
    # The root reply is reported before its code runs, so a status can show the model's plan.
    replied = next(e for e in events if isinstance(e, RootReplied))
    assert replied.iteration == 1 and "parallel_query" in replied.reply
    assert kinds.index(RootReplied) < kinds.index(SubcallProgress)
    assert all(p.refused == 0 and p.refused_by is None for p in progress)


async def test_async_event_callbacks_are_awaited() -> None:
    seen: list[str] = []

    async def callback(event: Event) -> None:
        await asyncio.sleep(0)
        seen.append(type(event).__name__)

    root = ScriptedLLM(repl("x = 1", "FINAL(ok)"))
    await RLM(root).query_async("q", "c", on_event=callback)
    assert seen == [
        "IterationStarted",
        "RootReplied",
        "CodeExecuted",
        "IterationFinished",
        "RunFinished",
    ]


def test_a_failing_callback_does_not_end_the_run() -> None:
    def broken(event: Event) -> None:
        raise RuntimeError("display broke")

    assert RLM(ScriptedLLM("FINAL(fine)")).query("q", "c", on_event=broken)[0] == "fine"


def test_no_subcalls_mode_disables_sub_calls_and_says_so() -> None:
    root = ScriptedLLM(repl("llm_query('x')"), "FINAL(done)")
    RLM(root, prompt_mode="no_subcalls").query("q", "c")
    assert "disabled" in root.seen[0][0]["content"]
    assert "sub-calls are disabled" in root.seen[1][-1]["content"]


@pytest.mark.parametrize("mode", ["standard", "conservative", "no_subcalls"])
def test_each_prompt_mode_teaches_final(mode: str) -> None:
    root = ScriptedLLM("FINAL(x)")
    RLM(root, prompt_mode=mode).query("q", "c")  # type: ignore[arg-type]
    system = root.seen[0][0]["content"]
    assert "FINAL_VAR(" in system and "```repl" in system


def test_standard_mode_teaches_map_reduce_with_parallel_query() -> None:
    root = ScriptedLLM("FINAL(x)")
    RLM(root).query("q", ["a", "bb"])
    system, first = root.seen[0][0]["content"], root.seen[0][1]["content"]
    assert "parallel_query" in system and "instead of a loop" in system
    assert "list of 2 strings" in first and "q" in first


def test_subcall_budget_stops_the_run_with_the_best_answer() -> None:
    root = ScriptedLLM(
        repl("r = parallel_query('{chunk}', list('abcdef'))\nprint(r)"), "FINAL(partial)"
    )
    events: list[Event] = []
    answer, _ = RLM(root, ScriptedLLM(), max_subcalls=4, max_parallel_calls=1).query(
        "q", "c", on_event=events.append
    )
    assert answer == "partial"
    assert "budget is used up" in root.seen[1][-1]["content"]
    done = next(e for e in events if isinstance(e, RunFinished))
    assert done.subcalls == 4 and done.stopped_by == "max_subcalls"


def test_query_from_inside_a_running_event_loop() -> None:
    async def notebook_cell() -> str:
        return RLM(ScriptedLLM("FINAL(from a notebook)")).query("q", "c")[0]

    assert asyncio.run(notebook_cell()) == "from a notebook"


def test_bad_arguments_are_refused_clearly() -> None:
    with pytest.raises(ConfigurationError, match="empty"):
        RLM(ScriptedLLM()).query("  ", "c")
    with pytest.raises(ConfigurationError, match="prompt_mode"):
        RLM(ScriptedLLM(), prompt_mode="wild")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="list of str"):
        RLM(ScriptedLLM()).query("q", [1, 2])  # type: ignore[list-item]


def test_trajectory_exports_as_json_lines() -> None:
    root = ScriptedLLM(repl("x = 1"), "FINAL(ok)")
    _, trajectory = RLM(root).query("q", "c")
    buffer = io.StringIO()
    write_trajectory_jsonl(trajectory, buffer)
    rows = [json.loads(line) for line in buffer.getvalue().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2]
    assert set(rows[0]) >= {"root_reply", "code_blocks", "outputs", "subcalls", "seconds"}


def test_root_sees_its_own_replies_and_outputs() -> None:
    def check(messages: Sequence[Message]) -> str:
        assert messages[-2]["role"] == "assistant" and "secret_value" in messages[-2]["content"]
        assert "314" in messages[-1]["content"]
        return "FINAL(seen)"

    root = ScriptedLLM(repl("secret_value = 314\nprint(secret_value)"), check)
    assert RLM(root).query("q", "c")[0] == "seen"


def test_verbose_prints_each_iteration_readably(capsys: pytest.CaptureFixture[str]) -> None:
    root = ScriptedLLM(repl("print('looked: ' + context)"), "FINAL(seen it)")
    RLM(root).query("q", "the context", verbose=True)
    out = capsys.readouterr().out
    assert "iteration 1" in out and "iteration 2" in out
    assert "looked: the context" in out
    assert out.rstrip().endswith("seen it")


def _sleeping_blocks(count: int, seconds: float) -> str:
    block = "```repl\nimport time\ntime.sleep({s})\nprint('block', {i})\n```\n"
    return "Working.\n" + "".join(block.format(s=seconds, i=i) for i in range(count))


def test_max_seconds_bounds_the_blocks_of_one_reply() -> None:
    """Six 1 s blocks under max_seconds=3: the budget is spent inside the reply, so the block
    running then is stopped at what was left, and the later ones are not run at all."""
    from rlm._run import MSG_BLOCK_NOT_RUN

    ran: list[CodeExecuted] = []
    finished: list[RunFinished] = []

    def note(event: Event) -> None:
        if isinstance(event, CodeExecuted):
            ran.append(event)
        elif isinstance(event, RunFinished):
            finished.append(event)

    root = ScriptedLLM(_sleeping_blocks(6, 1.0), "FINAL(as far as I got)")
    answer, trajectory = RLM(root, max_seconds=3.0).query("q", "c", on_event=note)
    outputs = trajectory[0]["outputs"]
    assert answer == "as far as I got" and finished[0].stopped_by == "max_seconds"
    assert len(outputs) == 6 and outputs[-1] == MSG_BLOCK_NOT_RUN
    assert 1 <= len(ran) < 6
    assert sum(e.seconds for e in ran) < 3.0 + 2.0  # unbounded, it would be 6 s
    stopped = [o for o in outputs if "time budget" in o and o != MSG_BLOCK_NOT_RUN]
    assert len(stopped) <= 1  # at most the block running when the time ran out


def test_a_block_is_stopped_at_what_is_left_of_max_seconds() -> None:
    root = ScriptedLLM(_sleeping_blocks(1, 30.0), "FINAL(stopped)")
    answer, trajectory = RLM(root, max_seconds=2.0, cell_timeout=60).query("q", "c")
    assert answer == "stopped"
    assert "the run's time budget" in trajectory[0]["outputs"][0]
    assert trajectory[0]["seconds"] < 2.0 + 3.0  # not the block's 30 s, nor its 60 s limit
