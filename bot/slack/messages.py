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
    "• Files (text, Markdown, CSV, JSON, PDF, Word) shared where you ask are read with the "
    "messages, whenever they were shared.\n"
    "• In my assistant pane or a DM — ask about the channel you're viewing, or about text and "
    "files you share there.\n"
    "• `/rlm history` — the last questions asked in this channel, with links.\n"
    "• `/rlm usage` — this workspace's tokens and runs today, and the limits on each run.\n"
    "• `/rlm forget` — (admins) delete what I keep about this channel.\n"
    "• `/rlm config` — (admins) this workspace's settings.\n"
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


def files_left_out(*, not_text: int, over_cap: int, unreadable: list[str]) -> str:
    """What a question did not read of its scope's files ("" when it read them all):
    `not_text` counts images; `unreadable` names the rest, unsupported types included."""
    parts = []
    if over_cap:
        parts.append(f"{over_cap:,} file{'s' if over_cap != 1 else ''} over the per-question limit")
    if unreadable:
        shown = ", ".join(unreadable[:3]) + (", …" if len(unreadable) > 3 else "")
        parts.append(f"{len(unreadable):,} I couldn't read ({shown})")
    if not_text:
        parts.append(f"{not_text:,} image{'s' if not_text != 1 else ''}")
    return f"Files not read: {'; '.join(parts)}." if parts else ""


EMPTY_CHANNEL = (
    "There is nothing in this channel for me to read yet: post or upload something, then ask."
)
EMPTY_THREAD = (
    "There is nothing in this thread for me to read yet: add messages or files, "
    "or mention me at the top level to use the whole channel."
)


def answer_footer(
    *, iterations: int, subcalls: int, tokens: int, seconds: float, run_id: int
) -> str:
    return (
        f"_{iterations} iteration{'s' if iterations != 1 else ''} · "
        f"{subcalls} sub-call{'s' if subcalls != 1 else ''} · {tokens:,} tokens · "
        f"{seconds:.1f} s · run {run_id}_"
    )


EMPTY_ANSWER = "The model finished without an answer: try asking more specifically."
ANSWER_CONTINUES = "_The answer is too long for messages: the rest is in the file below._"


def answer_file_comment(run_id: int) -> str:
    return f"The rest of the answer of run {run_id}."


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


INTERRUPTED = (
    ":warning: This run was interrupted because the app restarted: ask again to start over."
)

# A question that could not be stored (the app's database is away or its disk is full):
# said once to the asker, in place of everything else.
NOT_TAKEN = (
    ":warning: I couldn't take your question just now: something on my side isn't working. "
    "Please ask again in a few minutes."
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


# -- a run's live status, its summary and its controls -----------------------------------------

WORKING = ":hourglass_flowing_sand: *Working on it*"
STARTING = ":hourglass_flowing_sand: Starting…"
NOTHING_READ = "nothing read yet"


def left_out_capped(limit: int) -> str:
    return f"only the newest {limit:,} messages read (`RLM_HISTORY_MESSAGES`)"


def left_out_older(days: int) -> str:
    return f"history older than {days:,} days not read (`RLM_HISTORY_DAYS`)"


def read_summary(
    messages: int, first: str | None, last: str | None, files: int, left_out: list[str]
) -> str:
    """ "397 messages, 1 Sep–30 Nov, 3 files; older history not read"."""
    parts = []
    if messages:
        span = f", {first}–{last}" if first and last and first != last else ""
        span = span or (f", {first}" if first else "")
        parts.append(f"{messages:,} message{'s' if messages != 1 else ''}{span}")
    if files:
        parts.append(f"{files:,} file{'s' if files != 1 else ''}")
    text = ", ".join(parts) or NOTHING_READ
    return text + ("; " + "; ".join(left_out) if left_out else "")


def status_reading(summary: str) -> str:
    return f":books: Read {summary}"


def step_line(iteration: int, plan: str, detail: str) -> str:
    plan = plan or "thinking…"
    return f"*Step {iteration}:* {plan}" + (f" — {detail}" if detail else "")


def map_failures(failed: int) -> str:
    return f"{failed:,} failed"


_BUDGET_SETTINGS = {
    "max_subcalls": "the run's sub-call budget (`RLM_MAX_SUBCALLS`)",
    "max_tokens": "the run's token budget (`RLM_MAX_RUN_TOKENS`)",
    "max_seconds": "the run's time budget (`RLM_MAX_RUN_SECONDS`)",
}


def budget_name(limit: str) -> str:
    return _BUDGET_SETTINGS.get(limit, f"the run's {limit} budget")


def map_refused(refused: int, limit: str) -> str:
    return f"{refused:,} skipped: {budget_name(limit)} is used up"


def code_error() -> str:
    return "the code raised an error; the model sees it and tries again"


def waiting_for_model(seconds: float) -> str:
    return f":hourglass: still waiting for the model ({seconds:.0f} s)"


def summary_finished(
    *, iterations: int, subcalls: int, seconds: float, read: str, stopped_by: str | None
) -> str:
    steps = f"{iterations} step{'s' if iterations != 1 else ''}"
    calls = f", {subcalls:,} sub-call{'s' if subcalls != 1 else ''}" if subcalls else ""
    stop = f"; stopped by {budget_name(stopped_by)}" if stopped_by else ""
    return f":white_check_mark: Answered in {steps}{calls}, {seconds:.1f} s · read {read}{stop}"


def cancelled(user_id: str, seconds: float) -> str:
    return f":no_entry_sign: Cancelled by <@{user_id}> after {seconds:.1f} s."


CANCEL_NOT_ALLOWED = "Only the person who asked or a workspace admin can cancel this run."
RUN_NOT_ACTIVE = "This run has already ended, so there is nothing to cancel."
RUN_GONE = "I can't find that run any more: its record may have been deleted."
RETRY_NOT_ALLOWED = "Only a failed or cancelled run can be retried."
RETRY_DONE = "This run has already been retried: see the newer answer in this thread."
FEEDBACK_THANKS = "Thanks for the feedback: it is stored with this run."


# Buttons and the Show steps modal.
BUTTON_CANCEL = "Cancel"
BUTTON_RETRY = "Retry"
BUTTON_SHOW_STEPS = "Show steps"
BUTTON_TRAJECTORY = "Post the full trajectory (JSON Lines)"
BUTTON_CLOSE = "Close"
NO_PLAN = "(no plan stated)"
NO_STEPS = "This run has no recorded steps."
OUTPUT_LABEL = "Output:"


def more_steps(count: int) -> str:
    return f"{count} more steps are in the file."


def steps_title(run_id: int) -> str:
    return f"Run {run_id}: steps"[:24]


def trajectory_comment(run_id: int) -> str:
    return f"The full trajectory of run {run_id}, one JSON object per step."


# Failures, told to users in one sentence; the operator's fix goes to the log (and App Home).

PROVIDER_DOWN = (
    ":warning: The model provider didn't answer, so this run stopped: press Retry to try again."
)
SETUP_PROBLEM = (
    ":warning: I can't use my model right now because of a setup problem; "
    "the app's admin has been told."
)
MISSING_SCOPE_FOR_USER = (
    ":warning: The app is missing a Slack permission it needs; the app's admin has been told."
)
CRASHED = ":warning: Something went wrong on my side and this run stopped: press Retry."

# For the log and App Home: what only an operator can fix, and how.
OPERATOR_FIXES = {
    "operator:provider_auth": (
        "the model provider refused the API key: set a valid key (OPENAI_API_KEY, "
        "ANTHROPIC_API_KEY or GEMINI_API_KEY) and restart the app"
    ),
    "operator:unknown_model": (
        "the model provider does not know the model: check RLM_ROOT_MODEL and RLM_SUB_MODEL"
    ),
    "operator:missing_scope": (
        "the Slack app lacks a permission: add the scope named in the log to manifest.yml's "
        "bot scopes and reinstall the app"
    ),
}


# -- stored data -------------------------------------------------------------------------------

FORGET_ADMINS_ONLY = (
    "Only a workspace admin or owner can use `/rlm forget`: ask one to run it in this channel."
)


def forget_done(runs: int, files: int, running: int) -> str:
    runs_text = f"{runs:,} run{'s' if runs != 1 else ''}"
    files_text = f"{files:,} file{'s' if files != 1 else ''}"
    text = (
        f":wastebasket: Deleted what I had stored for this channel: {runs_text} (questions, "
        f"steps and answers) and the text of {files_text}. Messages in Slack are untouched."
    )
    if running:
        text += (
            f" Still going, so kept: {running:,} run{'s' if running != 1 else ''}; "
            "run `/rlm forget` again once it is done."
        )
    return text


def forget_failed(reason: str) -> str:
    return f"I couldn't check that you are a workspace admin ({reason}): nothing was deleted."


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
