"""Every string the app shows in Slack, kept together so wording is reviewed in one place.

Each error says what happened and what to do, in one sentence.
"""

from __future__ import annotations

from collections.abc import Sequence

from rlm import ProviderLimit

USAGE = (
    "*How to use me*\n"
    "• `/rlm ask <question>` — I post your question here and answer in its thread, reading "
    "this channel's history and the files shared in it.\n"
    "• `@rlm <question>` in a thread — I answer from that thread's messages and files; "
    "at the top level, from the whole channel.\n"
    "• Upload a file (text, Markdown, CSV, JSON, PDF, Word) to a channel I'm in and I keep "
    "its text for later questions.\n"
    "• `/rlm usage` — this workspace's tokens and runs today, and the limits on each run.\n"
    "• `/rlm help` — this message."
)

MENTION_USAGE = (
    "Ask me something after the mention, for example "
    "`@rlm what did we decide about the launch date?`"
)


def unknown_subcommand(word: str) -> str:
    return f"I don't know `/rlm {word}`.\n\n{USAGE}"


def question_root(user_id: str, question: str) -> str:
    return f"*<@{user_id}> asked:* {question}"


def queued(ahead: int, limit: int) -> str:
    runs = "run is" if ahead == 1 else "runs are"
    return (
        f":hourglass_flowing_sand: Waiting my turn: {ahead} {runs} ahead of this one in this "
        f"workspace, which runs {limit} at a time. I'll start as soon as one finishes."
    )


def reading(messages: int, files: int, chars: int) -> str:
    parts = [f"{messages:,} message{'s' if messages != 1 else ''}"] if messages else []
    if files:
        parts.append(f"{files:,} file{'s' if files != 1 else ''}")
    return f":books: Reading {' and '.join(parts)} ({chars:,} characters)…"


EMPTY_CHANNEL = (
    "There is nothing in this channel for me to read yet: post or upload something, then ask."
)
EMPTY_THREAD = (
    "There is nothing in this thread for me to read yet: add messages or files, "
    "or mention me at the top level to use the whole channel."
)


def iteration_done(
    iteration: int, code_blocks: int, first_line: str, subcalls: int, seconds: float
) -> str:
    if code_blocks:
        blocks = f"ran {code_blocks} code block{'s' if code_blocks != 1 else ''}"
        if first_line:
            blocks += f" (`{first_line}`)"
    else:
        blocks = "thought it over (no code)"
    calls = f", {subcalls} sub-call{'s' if subcalls != 1 else ''}" if subcalls else ""
    return f"Step {iteration}: {blocks}{calls} — {seconds:.1f} s"


def code_failed(iteration: int) -> str:
    return f"Step {iteration}: the code raised an error; the model sees it and tries again."


def map_progress(iteration: int, done: int, total: int, failed: int) -> str:
    failures = f", {failed} failed" if failed else ""
    return f"Step {iteration}: {done}/{total} sub-calls done{failures}…"


def answer_footer(
    *, iterations: int, subcalls: int, tokens: int, seconds: float, run_id: int
) -> str:
    return (
        f"_{iterations} iteration{'s' if iterations != 1 else ''} · "
        f"{subcalls} sub-call{'s' if subcalls != 1 else ''} · {tokens:,} tokens · "
        f"{seconds:.1f} s · run {run_id}_"
    )


EMPTY_ANSWER = "The model finished without an answer: try asking more specifically."


_LIMIT_NAMES = {
    "max_iterations": ("iterations", "RLM_MAX_ITERATIONS"),
    "max_subcalls": ("sub-calls", "RLM_MAX_SUBCALLS"),
    "max_tokens": ("tokens", "RLM_MAX_RUN_TOKENS"),
    "max_seconds": ("seconds", "RLM_MAX_RUN_SECONDS"),
}


def _number(value: float) -> str:
    """2000000 → "2,000,000"; 0.5 → "0.5"."""
    return f"{int(value):,}" if float(value).is_integer() else f"{value:,.1f}"


def stopped_by(limit: str, amount: float | None) -> str:
    """The line before the footer of an answer a budget cut short."""
    unit, variable = _LIMIT_NAMES.get(limit, (limit.replace("_", " "), ""))
    what = f"{_number(amount)} {unit}" if amount is not None else unit
    setting = f" (`{variable}`)" if variable else ""
    return (
        f"_:warning: Stopped by the limit of {what} per run{setting}: this is the best "
        "answer so far._"
    )


def stopped_by_daily_tokens(limit: int) -> str:
    return (
        f"_:warning: Stopped by this workspace's daily limit of {limit:,} tokens "
        "(`RLM_DAILY_TOKENS`): this is the best answer so far._"
    )


def daily_budget_used(used: int, limit: int) -> str:
    return (
        f":no_entry: This workspace has used its {limit:,} tokens for today ({used:,} so far), "
        "so I won't start a run: ask again after 00:00 UTC, or ask the app's admin to raise "
        "`RLM_DAILY_TOKENS`."
    )


def out_of_time(seconds: float) -> str:
    return (
        f":warning: This run hit its time limit of {_number(seconds)} s before the model "
        "could give an answer: ask something narrower, or ask the app's admin to raise "
        "`RLM_MAX_RUN_SECONDS`."
    )


def _limit(value: float, unit: str) -> str:
    return f"{_number(value)} {unit}" if value else f"no limit on {unit}"


def usage_report(
    *,
    tokens_today: int,
    daily_tokens: int,
    runs_today: int,
    in_flight: int,
    max_iterations: int,
    max_subcalls: int,
    max_run_tokens: int,
    max_run_seconds: float,
) -> str:
    if daily_tokens:
        share = 100 * tokens_today / daily_tokens
        tokens = f"{tokens_today:,} of {daily_tokens:,} a day ({share:.0f}%)"
    else:
        tokens = f"{tokens_today:,} (no daily limit)"
    runs = "run" if runs_today == 1 else "runs"
    per_run = ", ".join(
        (
            _limit(max_iterations, "iterations"),
            _limit(max_subcalls, "sub-calls"),
            _limit(max_run_tokens, "tokens"),
            _limit(max_run_seconds, "seconds"),
        )
    )
    return (
        "*This workspace today* (since 00:00 UTC)\n"
        f"• Tokens used: {tokens}\n"
        f"• {runs_today:,} {runs} today, {in_flight:,} in flight now\n"
        f"• Each run may use at most: {per_run}"
    )


def provider_failed(detail: str) -> str:
    return (
        f":warning: The model provider failed, so this run stopped ({detail}). "
        "Try again in a few minutes."
    )


def run_crashed(run_id: int) -> str:
    return (
        f":warning: Something went wrong on my side and run {run_id} stopped: try again, and "
        "tell the app's admin if it keeps happening."
    )


INTERRUPTED = (
    ":warning: This run was interrupted because the app restarted: ask again to start over."
)

NOT_IN_CHANNEL = (
    "I'm not in this channel, so I can't read it or post here: invite me with "
    "`/invite @rlm` and ask again."
)

ARCHIVED = "This channel is archived, so I can't post in it."


def missing_scope(needed: str) -> str:
    return (
        f"The app lacks the `{needed}` permission: an admin needs to add it "
        "(it is in manifest.yml) and reinstall the app, then try again."
    )


def slack_refused(method: str, error: str) -> str:
    return f"Slack refused `{method}` ({error}): try again in a minute."


def cannot_read_context(reason: str) -> str:
    return f":warning: I couldn't read the messages to answer from: {reason}"


# -- files -------------------------------------------------------------------------------------


def file_ready(name: str, size: str, chars: int) -> str:
    return (
        f":page_facing_up: Read *{name}* ({size}): {chars:,} characters of text, "
        "kept for questions in this channel."
    )


def file_rejected(reason: str) -> str:
    """`reason` is bot.files' own sentence, which names the file."""
    return f":no_entry_sign: {reason}"


def file_too_large(name: str, size: str, limit: str) -> str:
    return (
        f"I can't use *{name}* ({size}): it is larger than the {limit} limit; "
        "split it or share an excerpt."
    )


def file_auth_failed(name: str) -> str:
    return (
        f"I couldn't download *{name}*: Slack sent a sign-in page instead of the file, so the "
        "bot token lacks access (the app needs the `files:read` permission; reinstall it)."
    )


def file_download_failed(name: str, detail: str) -> str:
    return f"I couldn't download *{name}* ({detail}): upload it again in a minute."


def file_host_refused(name: str, host: str) -> str:
    return (
        f"I didn't download *{name}*: its address is on `{host}`, not Slack, and I only send "
        "the bot token to Slack."
    )


def provider_limits_report(limits: Sequence[ProviderLimit]) -> str:
    """The adaptive sub-call limit of each provider key in use, shared by all workspaces."""
    if not limits:
        return ""
    lines = []
    for limit in limits:
        held = f", holding {limit.held_for:.1f} s for the provider" if limit.held_for > 0 else ""
        lines.append(
            f"• {limit.name}: {limit.width:,} sub-calls at once now (ceiling "
            f"{limit.ceiling:,}), {limit.in_flight:,} in flight, {limit.throttled:,} "
            f"rate-limit answers so far{held}"
        )
    return "\n*Provider limits* (shared by every workspace on the key)\n" + "\n".join(lines)
