"""Every string the app shows in Slack, kept together so wording is reviewed in one place.

Each error says what happened and what to do, in one sentence.
"""

from __future__ import annotations

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
    "• `/rlm usage` — how much this workspace has asked of me today, and its limits.\n"
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
    others = "question is" if ahead == 1 else "questions are"
    at_once = "one question" if limit == 1 else f"{limit} questions"
    return (
        f":hourglass_flowing_sand: Waiting my turn: {ahead} {others} ahead of this one in this "
        f"workspace, which answers {at_once} at a time. I'll start as soon as one finishes."
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


def answer_footer(*, steps: int, seconds: float) -> str:
    """The line under an answer: how long it took, in the member's words (the numbers an
    admin needs are in Show steps and `/rlm usage`)."""
    return f"_{steps} step{'s' if steps != 1 else ''} · {seconds:.1f} s_"


EMPTY_ANSWER = "The model finished without an answer: try asking more specifically."
ANSWER_CONTINUES = "_The answer is too long for messages: the rest is in the file below._"
ANSWER_FILE_COMMENT = "The rest of the answer."

# What each limit is called when it stops a question, in the member's words.
_LIMIT_WORDS = {
    "max_iterations": "the limit on steps for one question",
    "max_subcalls": "the limit on how much one question may read in parts",
    "max_tokens": "the limit on how much one question may ask of the model",
    "max_seconds": "the time limit for one question",
    "daily_tokens": "this workspace's daily limit",
}
ASK_AN_ADMIN = "a workspace admin can tell you more"


def limit_words(limit: str) -> str:
    return _LIMIT_WORDS.get(limit, "a limit on one question")


def stopped_by(limit: str) -> str:
    """The line after an answer a limit cut short."""
    return (
        f"_:warning: I stopped at {limit_words(limit)}, so this is the best answer so far; "
        f"{ASK_AN_ADMIN}._"
    )


# Money limits, as members read them: what happened and what to do, never an amount.
DAILY_SPEND_USED = (
    ":no_entry: This workspace has reached its spending limit for today, so I can't start on "
    "this question: ask again after 00:00 UTC, or ask a workspace admin."
)
STOPPED_BY_SPEND = (
    "_:warning: I stopped at the spending limit for one question: this is the best answer so far._"
)
STOPPED_BY_DAILY_SPEND = (
    "_:warning: I stopped at this workspace's spending limit for today: this is the best "
    "answer so far._"
)

DAILY_LIMIT_REACHED = (
    ":no_entry: This workspace has reached its daily limit, so I can't start on this "
    "question: ask again after 00:00 UTC, or ask a workspace admin to raise the limit."
)
OUT_OF_TIME = (
    ":warning: I ran out of time before I could answer: ask something narrower, or ask a "
    "workspace admin about the time limit."
)


INTERRUPTED = ":warning: I was interrupted because the app restarted: ask again to start over."

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
    return f"only the newest {limit:,} messages read"


def left_out_older(days: int) -> str:
    return f"history older than {days:,} days not read"


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


def step_line(step: int, plan: str, detail: str) -> str:
    plan = plan or "thinking…"
    return f"*Step {step}:* {plan}" + (f" — {detail}" if detail else "")


def map_failures(failed: int) -> str:
    return f"{failed:,} failed"


def map_refused(refused: int, limit: str) -> str:
    parts = f"{refused:,} part{'s' if refused != 1 else ''}"
    return f"{parts} skipped: {limit_words(limit)} was reached"


def code_error() -> str:
    return "the code raised an error; the model sees it and tries again"


def waiting_for_model(seconds: float) -> str:
    return f":hourglass: still waiting for the model ({seconds:.0f} s)"


def summary_finished(*, steps: int, seconds: float, read: str, stopped_by: str | None) -> str:
    shown = f"{steps} step{'s' if steps != 1 else ''}"
    stop = f"; stopped at {limit_words(stopped_by)}" if stopped_by else ""
    return f":white_check_mark: Answered in {shown}, {seconds:.1f} s · read {read}{stop}"


def cancelled(user_id: str, seconds: float) -> str:
    return f":no_entry_sign: Cancelled by <@{user_id}> after {seconds:.1f} s."


CANCEL_NOT_ALLOWED = "Only the person who asked or a workspace admin can cancel this."
RUN_NOT_ACTIVE = "This question has already been answered or stopped: nothing to cancel."
RUN_GONE = "I can't find that question any more: its record may have been deleted."
RETRY_NOT_ALLOWED = "Only a question that failed or was cancelled can be retried."
RETRY_DONE = "This question has already been retried: see the newer answer in this thread."
RETRIED_BELOW = ":arrow_down: Retried below."
FEEDBACK_UP_THANKS = "You marked this answer helpful: thanks, it is kept with the answer."
FEEDBACK_DOWN_THANKS = "You marked this answer not helpful: thanks, it is kept with the answer."
RECORD_ONLY_ASKER = "Only the person who asked or a workspace admin can get the full record."
RECORD_SENT = "I sent you the full record of its steps in our DM."


# Buttons and the Show steps modal.
BUTTON_CANCEL = "Cancel"
BUTTON_RETRY = "Retry"
BUTTON_SHOW_STEPS = "Show steps"
BUTTON_TRAJECTORY = "Send me the full record"
BUTTON_CLOSE = "Close"
NO_PLAN = "(no plan stated)"
NO_STEPS = "There are no recorded steps."
OUTPUT_LABEL = "Output:"
STEPS_TITLE = "How I answered"
STEPS_PRIVATE_NOTE = "The code and its output are shown to the person who asked and to admins."


def feedback_button(emoji: str, count: int) -> str:
    """A 👍/👎 button's label: the emoji and how many chose it (the choice is shared)."""
    return f"{emoji} {count}" if count else emoji


def steps_read(read: str) -> str:
    return f":books: Read {read}"


def step_heading(step: int, seconds: float, model_calls: int) -> str:
    calls = (
        f" · {model_calls:,} part{'s' if model_calls != 1 else ''} read by the helper model"
        if model_calls
        else ""
    )
    return f"*Step {step}* · {seconds:.1f} s{calls}"


def more_steps(count: int) -> str:
    return f"{count} more steps are in the full record."


TRAJECTORY_COMMENT = "The full record of your question's steps, one JSON object per step."


# Failures, told to users in one sentence; the operator's fix goes to the log (and App Home).

PROVIDER_DOWN = (
    ":warning: The model provider didn't answer, so I stopped: press Retry to try again."
)
SETUP_PROBLEM = (
    ":warning: I can't use my model right now because of a setup problem; "
    "the app's admin has been told."
)
MISSING_SCOPE_FOR_USER = (
    ":warning: The app is missing a Slack permission it needs; the app's admin has been told."
)
CRASHED = ":warning: Something went wrong on my side and I stopped: press Retry."

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


def read_from(counts: dict[str, tuple[int, int]]) -> str:
    """What a run read, from its stored sources ({kind: (sources, items)}): "" if unknown."""
    messages = sum(counts.get(kind, (0, 0))[1] for kind in ("channel_history", "thread"))
    files = counts.get("file", (0, 0))[0]
    return read_summary(messages, None, None, files, []) if counts else ""


def record_intro(question: str) -> str:
    shown = " ".join(question.split())
    shown = shown if len(shown) <= 200 else shown[:199] + "…"
    return f"The full record of the steps I took for your question: _{shown}_"
