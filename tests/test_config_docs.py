"""docs/configuration.md is generated from `Settings`: it must match what the generator
makes now, and every setting must have a meaning there."""

from __future__ import annotations

from bot.ops.config_docs import DOC_PATH, MEANINGS, render
from bot.settings import Settings


def test_every_setting_has_a_meaning_and_no_meaning_is_left_over():
    assert set(MEANINGS) == set(Settings.model_fields)


def test_the_configuration_doc_is_not_stale():
    assert DOC_PATH.read_text(encoding="utf-8") == render(), (
        "docs/configuration.md is stale: run `python -m bot.ops.config_docs`"
    )
