from __future__ import annotations

import subprocess
import sys

import rlm


def test_all_is_sorted_and_every_name_resolves() -> None:
    assert rlm.__all__ == sorted(rlm.__all__)
    for name in rlm.__all__:
        assert getattr(rlm, name) is not None, name


def test_design_public_api_is_importable() -> None:
    from rlm import RLM, AnthropicInterface, GeminiInterface, OpenAIInterface  # noqa: F401


def test_importing_rlm_loads_no_provider_sdk() -> None:
    sdks = "('openai', 'anthropic', 'google.genai')"
    code = f"import sys, rlm; print(sorted(m for m in {sdks} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
