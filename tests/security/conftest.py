"""The host as an attacker finds it: secrets in its environment and its project directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_llm import FakeLLMServer

from tests.security.attacks import SECRETS, Target, attack_target


@pytest.fixture
def target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, llm_server: FakeLLMServer
) -> Iterator[Target]:
    """The host's cwd holds `.env` and `rlm.db` with secrets; its env holds keys."""
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    monkeypatch.setenv("OPENAI_API_KEY", SECRETS[0])
    monkeypatch.setenv("SLACK_BOT_TOKEN", SECRETS[1])
    with attack_target(project, llm_server.port) as found:
        yield found
    assert not llm_server.requests, "the sandboxed code reached the LLM server"
