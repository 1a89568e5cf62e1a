"""What the fault tests share: a question script that maps over every line, and the checks
that a run ended cleanly with nothing it reported lost."""

from __future__ import annotations

import re

from bot import messages

# First root call: map over every line (no answer yet); second: answer. A run thus has two
# iterations, and as many sub-calls as its channel has lines.
MAP_EVERY_LINE = """Mapping over every line.
```repl
lines = [l for doc in context for l in doc.splitlines() if l.strip().startswith('[')]
answers = parallel_query("Summarize: {chunk}", lines)
failed = sum(a.startswith("Error") for a in answers)
final_answer = f"{len(answers)} parts read, {failed} failed"
print(final_answer)
```"""
ANSWER = "That is all.\nFINAL_VAR(final_answer)"


def map_then_answer(conversation: list[dict[str, str]]) -> str:
    answered = any(m["role"] == "assistant" for m in conversation)
    return ANSWER if answered else MAP_EVERY_LINE


def reported_steps(posts: list[str]) -> list[int]:
    """The iterations a thread reported as done, in order of the first report."""
    found = re.findall(r"^Step (\d+): (?:ran|thought)", "\n".join(posts), re.M)
    return sorted({int(n) for n in found})


async def check_run_ended_cleanly(bot, slack, run) -> str:
    """The run is finished, or failed with a message in its thread; every iteration it
    reported is stored, and it stored none it did not report. Returns its last post."""
    posts = slack.posts(run.channel_id, thread_ts=run.thread_ts)
    assert posts, f"run {run.id} said nothing in its thread"
    last = posts[-1]
    stored = [i.iteration for i in await bot.store.list_iterations(run.id)]
    assert stored == list(range(1, len(stored) + 1)) and run.iterations == len(stored)
    assert reported_steps(posts) == stored, (run.id, posts)
    if run.status == "finished":
        assert last.endswith(f"run {run.id}_")
        plural = "iteration" if len(stored) == 1 else "iterations"
        assert f"_{len(stored)} {plural} ·" in last
    else:
        assert run.status == "failed", (run.id, run.status)
        assert last.startswith(":warning:") and run.error, (run.id, last)
        assert last != messages.INTERRUPTED
    return last
