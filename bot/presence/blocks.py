"""Block Kit for a run: the live status, its one-line summary, the answer parts and the
Show steps modal, with the buttons' action ids. Pure builders, kept under Slack's limits.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from bot.presence.render import (
    MARKDOWN_BLOCK_LIMIT,
    SECTION_LIMIT,
    clip,
    escape_mrkdwn,
    plan_sentence,
)
from bot.slack import messages
from bot.storage import IterationRecord

CANCEL = "rlm_cancel"
SHOW_STEPS = "rlm_show_steps"
RETRY = "rlm_retry"
FEEDBACK_UP = "rlm_feedback_up"
FEEDBACK_DOWN = "rlm_feedback_down"
TRAJECTORY = "rlm_trajectory"
ACTION_IDS = (CANCEL, SHOW_STEPS, RETRY, FEEDBACK_UP, FEEDBACK_DOWN, TRAJECTORY)

MODAL_BLOCKS = 100
MODAL_STEPS = 24  # steps shown (4 blocks each); the JSON Lines file has them all
CODE_EXCERPT = 1200
OUTPUT_EXCERPT = 900

Block = dict[str, Any]


def _mrkdwn(text: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": clip(text, SECTION_LIMIT)}


def section(text: str) -> Block:
    return {"type": "section", "text": _mrkdwn(text)}


def context(text: str) -> Block:
    return {"type": "context", "elements": [_mrkdwn(text)]}


def button(text: str, action_id: str, run_id: int, style: str | None = None) -> Block:
    element: Block = {
        "type": "button",
        "text": {"type": "plain_text", "text": text, "emoji": True},
        "action_id": action_id,
        "value": str(run_id),
    }
    if style:
        element["style"] = style
    return element


def actions(run_id: int, *buttons: Block) -> Block:
    return {"type": "actions", "block_id": f"rlm_run_{run_id}", "elements": list(buttons)}


def status_blocks(run_id: int, text: str, *, cancellable: bool) -> list[Block]:
    blocks = [section(text)]
    if cancellable:
        blocks.append(actions(run_id, button(messages.BUTTON_CANCEL, CANCEL, run_id, "danger")))
    return blocks


def summary_blocks(
    run_id: int, text: str, *, retry: bool, detail: str = "", steps: bool = True
) -> list[Block]:
    """The collapsed status: one line (and for a failure, what was read), with the buttons
    that apply: Retry for a run worth retrying, Show steps for one that took steps; a notice
    with neither carries no buttons."""
    blocks = [section(text)]
    if detail:
        blocks.append(context(detail))
    buttons = [button(messages.BUTTON_SHOW_STEPS, SHOW_STEPS, run_id)] if steps else []
    if retry:
        buttons.insert(0, button(messages.BUTTON_RETRY, RETRY, run_id, "primary"))
    if buttons:
        blocks.append(actions(run_id, *buttons))
    return blocks


def retried_blocks(shown: Sequence[Block]) -> list[Block]:
    """A failed run's message once retried: its Retry gone, and a line saying so."""
    kept: list[Block] = []
    for block in shown:
        if block.get("type") == "actions":
            elements = [e for e in block.get("elements", []) if e.get("action_id") != RETRY]
            if not elements:
                continue
            block = {**block, "elements": elements}
        kept.append(block)
    return [*kept, context(messages.RETRIED_BELOW)]


def feedback_actions(run_id: int, up: int = 0, down: int = 0) -> Block:
    """👍/👎 with how many chose each: the message is shared, so it shows counts, not whose."""
    return actions(
        run_id,
        button(messages.feedback_button(":thumbsup:", up), FEEDBACK_UP, run_id),
        button(messages.feedback_button(":thumbsdown:", down), FEEDBACK_DOWN, run_id),
    )


def with_feedback(shown: Sequence[Block], run_id: int, up: int, down: int) -> list[Block]:
    """An answer's blocks with its feedback buttons showing the counts."""
    return [feedback_actions(run_id, up, down) if _is_feedback(block) else block for block in shown]


def _is_feedback(block: Block) -> bool:
    return block.get("type") == "actions" and any(
        e.get("action_id") in (FEEDBACK_UP, FEEDBACK_DOWN) for e in block.get("elements", [])
    )


def answer_blocks(run_id: int, markdown: str, footer: str | None) -> list[Block]:
    """One answer part: a `markdown` block; the last part adds the footer and feedback."""
    blocks: list[Block] = [{"type": "markdown", "text": markdown[:MARKDOWN_BLOCK_LIMIT]}]
    if footer is not None:
        blocks.append(context(footer))
        blocks.append(feedback_actions(run_id))
    return blocks


def steps_modal(
    run_id: int, steps: Sequence[IterationRecord], *, read: str = "", full: bool = False
) -> Block:
    """Each step's plan and time, and what the run read; `full` (for the asker and admins)
    adds each step's code, an output excerpt and the button that sends the full record."""
    blocks: list[Block] = [context(messages.steps_read(read))] if read else []
    for step in steps[:MODAL_STEPS]:
        plan = plan_sentence(step.root_reply) or messages.NO_PLAN
        head = messages.step_heading(step.iteration, step.seconds, step.subcalls)
        blocks.append(section(f"{head}\n{plan}"))
        if full and step.code.strip():
            code = escape_mrkdwn(clip(step.code.replace("```", "'''"), CODE_EXCERPT))
            blocks.append(section(f"```{code}```"))
        if full and step.output.strip():
            out = escape_mrkdwn(clip(step.output.replace("```", "'''"), OUTPUT_EXCERPT))
            blocks.append(context(f"{messages.OUTPUT_LABEL}\n```{out}```"))
        blocks.append({"type": "divider"})
    if len(steps) > MODAL_STEPS:
        blocks.append(context(messages.more_steps(len(steps) - MODAL_STEPS)))
    if not steps:
        blocks.append(section(messages.NO_STEPS))
    blocks = blocks[: MODAL_BLOCKS - 1]
    if full:
        blocks.append(actions(run_id, button(messages.BUTTON_TRAJECTORY, TRAJECTORY, run_id)))
    elif steps:
        blocks.append(context(messages.STEPS_PRIVATE_NOTE))
    return {
        "type": "modal",
        "title": {"type": "plain_text", "text": messages.STEPS_TITLE},
        "close": {"type": "plain_text", "text": messages.BUTTON_CLOSE},
        "private_metadata": str(run_id),
        "blocks": blocks,
    }


def trajectory_jsonl(steps: Sequence[IterationRecord]) -> str:
    """The stored steps, one JSON object per line, as `rlm.write_trajectory_jsonl` writes;
    `<` written as the JSON escape `\\u003c`, the same data without Slack markup in the file."""
    return "".join(
        json.dumps(
            {
                "iteration": s.iteration,
                "root_reply": s.root_reply,
                "code": s.code,
                "output": s.output,
                "subcalls": s.subcalls,
                "input_tokens": s.input_tokens,
                "output_tokens": s.output_tokens,
                "seconds": s.seconds,
            },
            ensure_ascii=False,
        ).replace("<", "\\u003c")
        + "\n"
        for s in steps
    )
