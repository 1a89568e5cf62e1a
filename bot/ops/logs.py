"""The logs: secrets and people's words kept out, and, in JSON, what each line is about.

`RedactingFilter` blanks Slack tokens, provider keys and the configured credentials in every
record a handler emits (message, arguments, traceback, stack). `QuietLibraries` drops what
Bolt and slack_sdk log below WARNING, which includes whole request and response bodies, and
so what people wrote. `JsonFormatter` (`RLM_LOG_FORMAT=json`) writes one object per line
with the run and workspace the line is about (bot.telemetry.context) and the replica.
`configure_logging` puts them on the root logger's handlers.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from datetime import UTC, datetime

from bot.telemetry.context import fields

REDACTED = "[redacted]"

# Slack tokens (bot, user, app-level, refresh, legacy), OpenAI and Anthropic keys (sk-…),
# Google API keys (AIza…): whatever their value, wherever they show up.
SECRET_PATTERNS = (
    re.compile(r"\bxox[a-z](?:\.xox[a-z])?-[A-Za-z0-9-]+"),
    re.compile(r"\bxapp-[A-Za-z0-9-]+"),
    re.compile(r"\bsk-[A-Za-z0-9_-]{6,}"),
    re.compile(r"\bAIza[0-9A-Za-z_-]{30,}"),
)
# A configured value shorter than this is not a credential worth blanking everywhere.
MIN_SECRET_LENGTH = 6

# Loggers that log whole bodies (events as received, Web API replies) at INFO or DEBUG.
BODY_LOGGERS = ("slack_bolt", "slack_sdk")
# Below WARNING these only chatter: alembic 1.20 names each plugin it sets up at INFO.
CHATTY_LOGGERS = ("alembic.runtime.plugins",)


class RedactingFilter(logging.Filter):
    """Rewrites a record so no known secret, nor anything shaped like a token, survives."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__("redact")
        # Longest first, so a secret containing another is blanked whole.
        self.secrets = sorted(
            {s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True
        )

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        for pattern in SECRET_PATTERNS:
            text = pattern.sub(REDACTED, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: show its parts rather than lose it
            message = f"{record.msg!r} % {record.args!r}"
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the run (`run_id`) and
    workspace (`team_id`) when the line is about one, `replica`, and the traceback if any.

    The run and workspace come from the context the line was logged in (a run's task sets
    them), or from `extra={"run_id": ..., "team_id": ...}` on the call.
    """

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(fields())
        for name in ("run_id", "team_id"):
            if (value := getattr(record, name, None)) is not None:
                line[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return json.dumps(line, ensure_ascii=False, default=str)


class QuietLibraries(logging.Filter):
    """Drops records below WARNING from the loggers that log bodies, or only chatter.

    A handler filter rather than logger levels: Bolt copies the root level onto each of its
    loggers when it makes them, so a level set on `slack_bolt` would not reach them.
    """

    def __init__(self, names: Iterable[str] = (*BODY_LOGGERS, *CHATTY_LOGGERS)) -> None:
        super().__init__("quiet-libraries")
        self.prefixes = tuple(names)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        return not any(record.name == p or record.name.startswith(p + ".") for p in self.prefixes)


def configure_logging(
    level: str,
    secrets: Iterable[str],
    logger: logging.Logger | None = None,
    *,
    log_format: str = "text",
) -> int:
    """Put a `RedactingFilter` for `secrets` on each handler of `logger` (default: root) and,
    unless `level` is DEBUG, `QuietLibraries`; filters installed before are replaced. With
    `log_format` "json" each handler writes with `JsonFormatter`.
    Returns how many handlers were set up."""
    target = logger or logging.getLogger()
    filters: list[logging.Filter] = [RedactingFilter(secrets)]
    if logging.getLevelName(level) > logging.DEBUG:
        filters.append(QuietLibraries())
    for handler in target.handlers:
        for old in [f for f in handler.filters if isinstance(f, RedactingFilter | QuietLibraries)]:
            handler.removeFilter(old)
        for new in filters:
            handler.addFilter(new)
        if log_format == "json":
            handler.setFormatter(JsonFormatter())
    return len(target.handlers)
