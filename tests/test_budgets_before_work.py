"""Budgets before work: a sub-call reserves its budget inside its limiter slot, and a request
over a size limit is refused before any sub-call; the REPL runs in its real worker process."""

from __future__ import annotations

import ast
import asyncio
import math
import tracemalloc
from collections.abc import Sequence
from typing import Any

import pytest

from rlm import RLM, BadResponseError, ConfigurationError, Event, RunFinished, SubcallProgress
from rlm._budget import PromptTemplate, RunBudget, estimate_tokens
from rlm.clients._base import Completion, Message
from tests.scripted_llm import ScriptedLLM, repl


class MeteredLLM(ScriptedLLM):
    """A sub-model that bills like a provider, a token per 4 characters it receives, and
    keeps only the sizes of its prompts, never the prompts, so it holds no memory itself."""

    def __init__(self, *, latency: float = 0.0, report: bool = True) -> None:
        super().__init__(latency=latency)
        self.report = report  # False: a server that leaves usage out of its replies
        self.sizes: list[int] = []  # characters
        self.in_flight = 0
        self.peak_in_flight = 0

    @property
    def received_tokens(self) -> int:
        return sum(math.ceil(size / 4) for size in self.sizes)

    async def _complete(self, client: Any, messages: Sequence[Message]) -> Completion:
        prompt = messages[-1]["content"]
        self.sizes.append(len(prompt))
        if prompt.startswith("bad"):
            raise BadResponseError("the provider refused this one", status=400)
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.latency * (2 if prompt.startswith("slow") else 1))
        finally:
            self.in_flight -= 1
        tokens = math.ceil(len(prompt) / 4) if self.report else 0
        return Completion(f"seen {prompt[-8:]}", input_tokens=tokens, output_tokens=5)


def cell_output(root: ScriptedLLM) -> str:
    """What the root model was shown after its first reply's code ran (with what followed)."""
    return "\n".join(m["content"] for m in root.seen[1][2:])


# -- the token budget ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template_chars", "most_calls"),
    [(40_000, 2 + 4), (4_000, 20 + 4)],
    ids=["the attack scaled down", "many small calls"],
)
def test_a_map_never_bills_more_than_the_budget_plus_what_is_in_flight(
    template_chars: int, most_calls: int
) -> None:
    budget, concurrency = 20_000, 4
    code = (
        f"r = parallel_query('y' * {template_chars} + '{{chunk}}', ['a'] * 200)\n"
        "print('refused', sum(x.startswith(\"Error: the run's max_tokens budget\") for x in r))"
    )
    root = ScriptedLLM(repl(code), "FINAL(done)")
    sub = MeteredLLM(latency=0.01)
    events: list[Event] = []
    engine = RLM(root, sub, max_parallel_calls=concurrency, max_tokens=budget)
    answer, _ = engine.query("q", "c", on_event=events.append)

    per_call = estimate_tokens(template_chars + 1)
    calls = len(sub.sizes)
    assert 1 <= calls <= most_calls
    assert sub.received_tokens <= budget + concurrency * per_call
    assert f"refused {200 - calls}\n" in cell_output(root)
    assert answer == "done"  # the run went on to its next iteration
    finished = next(e for e in events if isinstance(e, RunFinished))
    assert finished.subcalls == calls
    assert finished.input_tokens + finished.output_tokens <= budget + concurrency * (per_call + 5)


def test_a_prompt_too_big_for_what_is_left_says_so() -> None:
    code = "print(llm_query('y' * 40_000))\nprint(llm_query('short'))"
    root = ScriptedLLM(repl(code), "FINAL(done)")
    sub = MeteredLLM()
    RLM(root, sub, max_tokens=5_000).query("q", "c")
    output = cell_output(root)
    assert "max_tokens budget has too little left for this prompt (about 10,000 tokens" in output
    assert "seen short" in output  # a smaller prompt still fits
    assert sub.sizes == [5]


def test_a_provider_that_reports_no_usage_still_spends_the_budget() -> None:
    code = "r = parallel_query('y' * 4_000 + '{chunk}', ['a'] * 50)"
    root = ScriptedLLM(repl(code), "FINAL(done)")
    sub = MeteredLLM(report=False)
    events: list[Event] = []
    RLM(root, sub, max_parallel_calls=1, max_tokens=10_000).query("q", "c", on_event=events.append)
    assert len(sub.sizes) == 9  # 15 root tokens, then 1,001 estimated tokens a call
    finished = next(e for e in events if isinstance(e, RunFinished))
    assert finished.input_tokens == 10 + 9 * 1_001 + 10  # both root calls, the estimates


def test_at_most_max_subcalls_reach_the_model() -> None:
    code = "r = parallel_query('{chunk}', [str(i) for i in range(50)])\nprint(r[-1])"
    root = ScriptedLLM(repl(code), "FINAL(done)")
    sub = MeteredLLM(latency=0.02)
    events: list[Event] = []
    answer, trajectory = RLM(root, sub, max_parallel_calls=10, max_subcalls=5).query(
        "q", "c", on_event=events.append
    )
    assert len(sub.sizes) == 5
    used_up = "Error: the run's max_subcalls budget is used up; no more sub-calls."
    assert used_up in cell_output(root)
    assert trajectory[0]["subcalls"] == 5
    progress = [e for e in events if isinstance(e, SubcallProgress)]
    assert [p.done for p in progress] == list(range(1, 51)) and progress[-1].failed == 45
    # The failures are the budget's refusals, and say which budget: a status can name it.
    assert (progress[-1].refused, progress[-1].refused_by) == (45, "max_subcalls")
    finished = next(e for e in events if isinstance(e, RunFinished))
    assert (finished.stopped_by, answer) == ("max_subcalls", "done")


# -- sizes, refused before any sub-call -----------------------------------------------------------


def test_a_map_over_max_map_chunks_is_refused_and_the_run_goes_on() -> None:
    root = ScriptedLLM(repl("r = parallel_query('{chunk}', ['x'] * 11)"), "FINAL(done)")
    sub = MeteredLLM()
    answer, trajectory = RLM(root, sub, max_map_chunks=10).query("q", "c")
    output = cell_output(root)
    assert "RuntimeError: parallel_query takes at most 10 chunks per call (got 11); " in output
    assert "split the work into several calls" in output
    assert sub.sizes == [] and trajectory[0]["subcalls"] == 0
    assert (answer, len(trajectory)) == ("done", 2)


def test_the_default_chunk_cap_refuses_a_huge_map_at_once() -> None:
    root = ScriptedLLM(repl("r = parallel_query('{chunk}', [''] * 200_000)"), "FINAL(done)")
    sub = MeteredLLM()
    assert RLM(root, sub).query("q", "c")[0] == "done"
    assert "at most 10,000 chunks per call (got 200,000)" in cell_output(root)
    assert sub.sizes == []


@pytest.mark.parametrize(
    ("template", "chunk", "got"),
    [
        ("'y' * 100_000 + '{chunk}'", "'a'", 20 * 100_001),
        ("'é' * 30_000 + '{chunk}'", "'a'", 20 * 60_001),  # UTF-8 bytes, not characters
        ("'{chunk}' * 6", "'a' * 10_000", 20 * 60_000),  # each placeholder gets the chunk
    ],
)
def test_a_map_whose_prompts_add_up_over_the_byte_cap_is_refused(
    template: str, chunk: str, got: int
) -> None:
    code = f"r = parallel_query({template}, [{chunk}] * 20)"
    root = ScriptedLLM(repl(code), "FINAL(done)")
    sub = MeteredLLM()
    RLM(root, sub, max_prompt_bytes=1_000_000).query("q", "c")
    output = cell_output(root)
    assert f"parallel_query's prompts would add up to {got:,} bytes, over the 1,000,000" in output
    assert sub.sizes == []


def test_an_llm_query_prompt_over_the_byte_cap_is_refused() -> None:
    code = "print(llm_query('x' * 1000))\nllm_query('x' * 1001)"
    root = ScriptedLLM(repl(code), "FINAL(done)")
    sub = MeteredLLM()
    answer, _ = RLM(root, sub, max_prompt_bytes=1000).query("q", "c")
    output = cell_output(root)
    assert "seen xxxxxxxx" in output  # at the cap: sent
    assert "RuntimeError: llm_query takes a prompt of at most 1,000 bytes (got 1,001); " in output
    assert sub.sizes == [1000] and answer == "done"


def test_the_caps_must_be_positive() -> None:
    with pytest.raises(ConfigurationError, match="max_map_chunks must be at least 1, got 0"):
        RLM(ScriptedLLM(), max_map_chunks=0)
    with pytest.raises(ConfigurationError, match="max_prompt_bytes must be at least 1, got -1"):
        RLM(ScriptedLLM(), max_prompt_bytes=-1)
    engine = RLM(ScriptedLLM())
    assert (engine.max_map_chunks, engine.max_prompt_bytes) == (10_000, 64 * 1024 * 1024)


# -- prompts built in the slot, results in order ------------------------------------------------


def test_prompts_are_built_only_while_their_call_is_in_flight() -> None:
    size, chunks = 1_000_000, 50
    code = f"r = parallel_query('z' * {size} + '{{chunk}}', ['c'] * {chunks})\nprint(len(r))"
    root = ScriptedLLM(repl(code), "FINAL(done)")
    sub = MeteredLLM(latency=0.005)
    engine = RLM(root, sub, max_parallel_calls=2)
    tracemalloc.start()
    try:
        engine.query("q", "c")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(sub.sizes) == chunks and sub.peak_in_flight == 2
    # Built up front, the prompts alone would take 50 MB; here the template arrives once,
    # and two prompts exist at a time.
    assert peak < 10 * size, f"peak {peak:,} bytes"


def test_results_keep_input_order_when_calls_finish_out_of_order() -> None:
    chunks = [
        ("slow" if i % 3 == 0 else "bad" if i % 7 == 3 else "") + f"c{i:02d}" for i in range(30)
    ]
    code = f"r = parallel_query('{{chunk}}', {chunks!r})"
    root = ScriptedLLM(repl(code, "FINAL_VAR(r)"))
    sub = MeteredLLM(latency=0.01)
    events: list[Event] = []
    answer, trajectory = RLM(root, sub, max_parallel_calls=4).query(
        "q", "c", on_event=events.append
    )
    results = ast.literal_eval(answer)
    for chunk, result in zip(chunks, results, strict=True):
        if chunk.startswith("bad"):
            assert result.startswith("Error: ") and "refused this one" in result
        else:
            assert result == f"seen {chunk[-8:]}"
    bad = sum(c.startswith("bad") for c in chunks)
    # A failed call was made, so it counts as a sub-call; its tokens go back to the budget.
    assert trajectory[0]["subcalls"] == 30
    sent = sum(estimate_tokens(len(c)) for c in chunks if not c.startswith("bad"))
    assert trajectory[0]["input_tokens"] == 10 + sent
    assert [e.failed for e in events if isinstance(e, SubcallProgress)][-1] == bad


def test_a_bug_in_the_sub_model_fails_the_map_as_one_clear_error() -> None:
    class Broken(MeteredLLM):
        async def _complete(self, client: Any, messages: Sequence[Message]) -> Completion:
            if messages[-1]["content"] == "boom":
                raise KeyError("a bug, not a provider error")
            return await super()._complete(client, messages)

    root = ScriptedLLM(repl("r = parallel_query('{chunk}', ['a', 'boom', 'b'])"), "FINAL(ok)")
    answer, _ = RLM(root, Broken(latency=0.01)).query("q", "c")
    assert "RuntimeError: 'a bug, not a provider error'" in cell_output(root)
    assert answer == "ok"


# -- the policy, without a run -------------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    ["Q: {chunk}", "no placeholder", "{chunk} and {chunk} {not one}", "é{chunk}ü", ""],
)
@pytest.mark.parametrize("chunk", ["", "abc", "日本語", "{chunk}"])
def test_a_prompt_size_is_known_without_building_it(template: str, chunk: str) -> None:
    shape = PromptTemplate(template)
    prompt = shape.prompt(chunk)
    assert shape.size(chunk) == len(prompt.encode("utf-8"))
    if "{chunk}" not in template:
        assert prompt == f"{template}\n\n{chunk}"


def test_a_reservation_is_replaced_by_the_usage_or_given_back() -> None:
    budget = RunBudget(max_subcalls=3, max_tokens=1_000)
    first = budget.reserve(2_000)  # 500 tokens
    assert not isinstance(first, str) and budget.reserved_tokens == 500
    second = budget.reserve(2_400)  # 600 more would pass 1,000
    assert isinstance(second, str) and "about 600 tokens needed, 500 left" in second
    assert budget.settle(first, 90, 10) == 90
    assert (budget.reserved_tokens, budget.input_tokens, budget.subcalls) == (0, 90, 1)
    third = budget.reserve(2_400)
    assert not isinstance(third, str)
    budget.release(third)
    budget.release(third)  # idempotent
    assert budget.reserved_tokens == 0 and budget.subcalls == 2
    assert not isinstance(budget.reserve(4), str)
    assert (
        budget.reserve(4) == "Error: the run's max_subcalls budget is used up; no more sub-calls."
    )
