"""Finding Slack markup in what the app sent: the pings, mentions and labelled links of
tests/adversarial_markdown.md, raw (not escaped, not a look-alike), in any recorded call."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

CORPUS = (Path(__file__).parent / "adversarial_markdown.md").read_text()

_INVISIBLE = "\u00ad\u034f\u180e\u200b-\u200f\u2060-\u206f\ufeff"
# Markup the app itself never writes: any special mention, and the corpus's own ids and
# forged link (the app does write `<@U1>` for askers and permalinks for citations).
MODEL_MARKUP = re.compile(
    rf"<[{_INVISIBLE}\s]*(?:!|@U123|#C123)"
    rf"|<[{_INVISIBLE}]*(?:https?://evil\.example|mailto:a@evil)"
)


def strings(value: Any) -> list[str]:
    """Every string in a call's parameters, JSON strings (blocks, views) opened up."""
    if isinstance(value, str):
        if value[:1] in "[{":
            try:
                return strings(json.loads(value))
            except ValueError:
                pass
        return [value]
    if isinstance(value, dict):
        return [s for key, item in value.items() for s in strings(key) + strings(item)]
    if isinstance(value, list | tuple):
        return [s for item in value for s in strings(item)]
    return []


def markup_in(texts: list[str]) -> list[str]:
    return [m.group(0) for text in texts for m in MODEL_MARKUP.finditer(text)]
