"""The strings of the app's own surfaces: App Home, `/rlm history`, the assistant pane and
DMs, kept together (the thread and command strings are in bot.slack.messages)."""

from __future__ import annotations

from datetime import datetime

# -- App Home and /rlm history ------------------------------------------------------------------

HOME_TITLE = "rlm"
HOME_INTRO = (
    "I answer questions over more text than a model reads at once: a channel's history, a "
    "thread, the files shared in them. Ask with `/rlm ask <question>` in a channel, mention "
    "me in a thread, or open my assistant pane while you view a channel and ask about it."
)
HOME_USAGE_TITLE = "Today"
HOME_RUNS_TITLE = "Your recent questions"
HOME_NO_RUNS = "You haven't asked me anything yet."
HOME_PROBLEMS_TITLE = "Configuration problems (admins only)"
HOME_NO_PROBLEMS = ":white_check_mark: No configuration problems recorded."
HISTORY_EMPTY = "No questions have been asked in this channel yet: try `/rlm ask <question>`."

STATUS_LABELS = {
    "queued": ":hourglass_flowing_sand: queued",
    "running": ":arrows_counterclockwise: running",
    "finished": ":white_check_mark: answered",
    "failed": ":x: failed",
    "interrupted": ":warning: interrupted",
    "stopped": ":black_square_for_stop: stopped",
}
DM_PLACE = "our DM"


def history_title(shown: int) -> str:
    return f"*The last {shown} question{'s' if shown != 1 else ''} in this channel*"


def run_line(
    *,
    question: str,
    link: str | None,
    status: str,
    place: str,
    user_id: str | None,
    when: datetime,
) -> str:
    """One run as a line: the question (linked to its thread), status, where, who, when."""
    label = clip(question, 80)
    shown = f"<{link}|{_link_label(label)}>" if link else escape(label)
    who = f" · <@{user_id}>" if user_id else ""
    stamp = when.strftime("%Y-%m-%d %H:%M UTC")
    return f"• {shown} — {STATUS_LABELS.get(status, status)} · {place}{who} · {stamp}"


def problem_line(*, detail: str, fix: str, count: int, last_seen: datetime) -> str:
    times = f"{count:,} time{'s' if count != 1 else ''}"
    stamp = last_seen.strftime("%Y-%m-%d %H:%M UTC")
    return f":warning: {escape(detail)}\n*Fix:* {escape(fix)}\n_Seen {times}, last {stamp}._"


# -- the assistant pane and DMs -----------------------------------------------------------------

PANE_PROMPTS_TITLE = "Ask about the channel you're viewing, or paste text or a file here:"
PANE_PROMPTS = (
    ("Summarize this channel", "Summarize what happened in this channel recently."),
    ("Decisions made", "What decisions were made in this channel, and when?"),
    ("Open questions", "Which questions in this channel are still unanswered?"),
    ("Action items", "List the action items in this channel, with who owns each."),
)
PANE_STATUS_THINKING = "is reading…"
# What Slack rotates through under the first status of a question (setStatus's
# `loading_messages`, at most 10), until the run's own progress replaces it.
PANE_LOADING_MESSAGES = (
    "Reading the conversation…",
    "Finding the parts that matter…",
    "Reading each part closely…",
    "Putting the answer together…",
)
PANE_STATUS_STARTED = "is thinking…"  # read what it needs; no step has begun yet
PANE_CANNOT_READ = (
    "I can't read the channel you're viewing: add me to it (`/invite @rlm`) and ask again. "
    "Meanwhile I can answer about text or files you share here."
)
PANE_NOT_A_MEMBER = (
    "I only answer about channels you're a member of, and you're not in the one you're "
    "viewing: join it, or ask about text or files you share here."
)
PANE_OTHER_WORKSPACE = (
    "The channel you're viewing belongs to another workspace, so I can't read it from here."
)
DM_EMPTY = "Ask me a question, and share the text or file it is about in this conversation."


def pane_title(question: str) -> str:
    """The pane thread's title in the user's history: the question's start."""
    return clip(question, 60)


def pane_status(step: str) -> str:
    """The pane's status line (Slack shows it after the app's name)."""
    return clip(step, 50)


def pane_step(iteration: int) -> str:
    return f"is thinking (step {iteration})…"


def pane_mapping(done: int, total: int) -> str:
    return f"is reading in parts ({done}/{total})…"


def pane_queued(ahead: int) -> str:
    return f"is waiting its turn ({ahead} ahead)…" if ahead else "is waiting its turn…"


# -- helpers ------------------------------------------------------------------------------------


def escape(text: str) -> str:
    """User text made inert in mrkdwn: no links, mentions or @channel can be smuggled in."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _link_label(text: str) -> str:
    return escape(text).replace("|", "¦")


SECTION_LIMIT = 3000  # characters in one section block's text


def clip_block(text: str) -> str:
    """Text cut to fit one section block, keeping its lines."""
    return text if len(text) <= SECTION_LIMIT else text[: SECTION_LIMIT - 1] + "…"


def clip(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"
