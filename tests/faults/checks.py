"""What the fault tests share: a question script that maps over every line, and the checks
that a run ended cleanly with nothing it reported lost."""

from __future__ import annotations

import re

from slack_runs import ANSWER_FOOTER, blocks_text

from bot.slack import messages

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


def reported_steps(slack, run) -> list[int]:
    """The steps a run's live status showed as done, over every version of the status."""
    view = slack.thread_view(run.channel_id, run.thread_ts) if run.thread_ts else []
    if not view:
        return []
    status_ts = view[0]["ts"]
    versions = [
        c.params.get("blocks") or []
        for c in slack.calls_to("chat.update")
        if c.error is None and c.params.get("ts") == status_ts
    ]
    shown = "\n".join(blocks_text(b) for b in versions)
    found = re.findall(r"^\*Step (\d+):\*.* \d+\.\d s$", shown, re.M)
    return sorted({int(n) for n in found})


async def check_run_ended_cleanly(bot, slack, run) -> str:
    """The run is finished, or failed with a message in its thread; every iteration its
    status showed as done is stored. Returns the text of its last message, as it reads now."""
    view = slack.thread_view(run.channel_id, run.thread_ts)
    assert view, f"run {run.id} said nothing in its thread"
    last = view[-1]["text"]
    stored = [i.iteration for i in await bot.store.list_iterations(run.id)]
    assert stored == list(range(1, len(stored) + 1)) and run.iterations == len(stored)
    assert set(reported_steps(slack, run)) <= set(stored), (run.id, view)
    if run.status == "finished":
        assert ANSWER_FOOTER.search(last), last
        plural = "step" if len(stored) == 1 else "steps"
        assert f"_{len(stored)} {plural} ·" in last
    else:
        assert run.status == "failed", (run.id, run.status)
        assert last.startswith(":warning:") and run.error, (run.id, last)
        assert last != messages.INTERRUPTED
    return last
