"""Rendering a huge answer for Slack: time to cut it into the parts a run posts plus the rest
as one file, for growing sizes. Linear time shows as a flat seconds-per-MB column (the old
splitter was quadratic: 8 MB 1.1 s, 32 MB 15 s). Run: `.venv/bin/python benchmarks/render.py`.
"""

from __future__ import annotations

import time

from bot.presence.answer_parts import render_answer
from bot.presence.render import split_markdown

PARAGRAPH = (
    "The team met on <!here> Friday [m1] and chose **Friday**; see `x < y` and "
    "[the plan](https://example.com/p).\n\n```python\nprint('<@U1>')\n```\n\n"
)


def main() -> None:
    print(f"{'MB':>4}  {'render s':>9}  {'s/MB':>6}  {'parts':>5}  {'split-all s':>11}  s/MB")
    for mb in (1, 8, 32, 40):
        answer = PARAGRAPH * (mb * 1_000_000 // len(PARAGRAPH))
        start = time.perf_counter()
        rendered = render_answer(answer, {"m1": "https://t.slack.com/archives/C1/p1"})
        render_s = time.perf_counter() - start
        start = time.perf_counter()
        parts = split_markdown(answer)
        split_s = time.perf_counter() - start
        print(
            f"{mb:>4}  {render_s:>9.2f}  {render_s / mb:>6.3f}  {len(rendered.parts):>5}  "
            f"{split_s:>11.2f}  {split_s / mb:>6.3f}  ({len(parts)} parts unbounded)"
        )


if __name__ == "__main__":
    main()
