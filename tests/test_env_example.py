"""`.env.example` lists every setting with its default, so an operator can start from it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.settings import Settings

EXAMPLE = Path(__file__).resolve().parents[1] / ".env.example"
# Settings DESIGN.md names that other parts of the app read (replicas, OAuth installs).
DESIGN_ONLY = {
    "REDIS_URL",
    "SLACK_CLIENT_ID",
    "SLACK_CLIENT_SECRET",
    "SLACK_STATE_SECRET",
    "RLM_ENCRYPTION_KEY",
}


def listed() -> dict[str, str | None]:
    """Each variable in the file: its value, or None where the line is commented out."""
    found: dict[str, str | None] = {}
    for line in EXAMPLE.read_text().splitlines():
        match = re.fullmatch(r"(# )?([A-Z][A-Z0-9_]*)=(.*)", line)
        if match:
            assert match[2] not in found, f"{match[2]} listed twice"
            found[match[2]] = None if match[1] else match[3]
    return found


def test_every_setting_is_listed():
    names = {name.upper() for name in Settings.model_fields}
    assert names | DESIGN_ONLY == set(listed())


def test_the_listed_values_are_the_defaults(monkeypatch: pytest.MonkeyPatch):
    for name in listed():
        monkeypatch.delenv(name, raising=False)
    required = {"slack_bot_token": "xoxb-x", "slack_signing_secret": "s"}
    from_file = Settings(_env_file=EXAMPLE, **required)  # type: ignore[call-arg]
    for name, field in Settings.model_fields.items():
        if name in required:
            continue
        assert getattr(from_file, name) == field.default, name
        value = listed()[name.upper()]
        assert (value is None) == (field.default is None), name
