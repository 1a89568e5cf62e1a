"""Configuration for many workspaces: OAuth settings, the encryption keys, secrets kept out of
logs, and the bounds on what a workspace's admins may set."""

from __future__ import annotations

import logging

import pytest
from cryptography.fernet import Fernet

from bot.ops.logs import RedactingFilter
from bot.settings import Settings, SettingsError
from bot.storage._crypto import TokenCipher, TokenDecryptError, parse_keys
from bot.workspaces.settings import SettingRefused, bounds_from, defaults_from, parse_value

VARIABLES = [name.upper() for name in Settings.model_fields]
KEY = Fernet.generate_key().decode()


@pytest.fixture
def env(monkeypatch, tmp_path):
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "shh-signing")
    monkeypatch.setenv("SLACK_CLIENT_ID", "1111.2222")
    monkeypatch.setenv("SLACK_CLIENT_SECRET", "client-secret-value-1")
    monkeypatch.setenv("SLACK_STATE_SECRET", "state-secret-value-1")
    monkeypatch.setenv("RLM_ENCRYPTION_KEY", KEY)
    return monkeypatch


def test_oauth_needs_no_bot_token_and_its_secrets_are_secrets(env):
    settings = Settings.from_env()
    assert settings.oauth_enabled and settings.slack_bot_token is None
    assert settings.slack_authorize_url == "https://slack.com/oauth/v2/authorize"
    assert {"client-secret-value-1", "state-secret-value-1", KEY} <= set(settings.secrets)
    other = Fernet.generate_key().decode()
    env.setenv("RLM_ENCRYPTION_KEY", f" {other} , {KEY} ")
    assert {other, KEY} <= set(Settings.from_env().secrets)
    assert settings.rlm_retention_days == 90 and not settings.rlm_purge_on_uninstall


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "RLM_ENCRYPTION_KEY is not set: OAuth installs keep workspace tokens encrypted"),
        (" , ", "RLM_ENCRYPTION_KEY is not set"),
        ("not-a-key-at-all-but-long", "RLM_ENCRYPTION_KEY key 1 is not a Fernet key"),
        (f"{KEY},short", "RLM_ENCRYPTION_KEY key 2 is not a Fernet key"),
    ],
)
def test_a_missing_or_malformed_key_stops_the_start_with_one_line(env, value, expected):
    if value is None:
        env.delenv("RLM_ENCRYPTION_KEY")
    else:
        env.setenv("RLM_ENCRYPTION_KEY", value)
    with pytest.raises(SettingsError) as caught:
        Settings.from_env()
    message = str(caught.value)
    assert message.startswith(expected) and "\n" not in message
    assert KEY not in message and "not-a-key" not in message and "short" not in message


def test_half_of_the_oauth_settings_is_refused_naming_the_missing(env):
    env.delenv("SLACK_STATE_SECRET")
    with pytest.raises(SettingsError) as caught:
        Settings.from_env()
    assert "SLACK_STATE_SECRET not set" in str(caught.value)
    assert "client-secret-value-1" not in str(caught.value)


def test_neither_a_bot_token_nor_oauth_is_refused(env):
    for name in ("SLACK_CLIENT_ID", "SLACK_CLIENT_SECRET", "SLACK_STATE_SECRET"):
        env.delenv(name)
    with pytest.raises(SettingsError) as caught:
        Settings.from_env()
    assert str(caught.value).startswith("SLACK_BOT_TOKEN is not set")


def test_a_bot_token_alone_keeps_one_workspace(env):
    for name in ("SLACK_CLIENT_ID", "SLACK_CLIENT_SECRET", "SLACK_STATE_SECRET"):
        env.delenv(name)
    env.delenv("RLM_ENCRYPTION_KEY")
    env.setenv("SLACK_BOT_TOKEN", "xoxb-1-2-abc")
    settings = Settings.from_env()
    assert not settings.oauth_enabled and settings.slack_bot_token == "xoxb-1-2-abc"


def test_the_cipher_writes_with_the_newest_key_and_reads_with_any():
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    written_old = TokenCipher(old).encrypt("xoxb-secret")
    both = TokenCipher(f"{new}, {old}")
    assert both.decrypt(written_old) == "xoxb-secret"
    rotated = both.rotate(written_old)
    assert TokenCipher(new).decrypt(rotated) == "xoxb-secret"
    assert TokenCipher(new).decrypt(both.encrypt("x")) == "x"
    with pytest.raises(TokenDecryptError) as caught:
        TokenCipher(new).decrypt(written_old)
    assert "xoxb" not in str(caught.value)
    with pytest.raises(TokenDecryptError):
        TokenCipher(new).decrypt("not a fernet value")
    assert len(parse_keys(f"{new},{old}")) == 2


@pytest.mark.parametrize(
    "token",
    [
        "xoxb-123-456-abcdef",
        "xoxe.xoxb-1-MTIzNDU2Nzg5MA-abcdefabcdef",
        "xoxe.xoxp-1-MTIzNDU2Nzg5MA-abcdefabcdef",
        "xoxe-1-My0xLTEyMzQ1Ni1hYmNkZWY",
        "xoxp-1-2-3-user",
    ],
)
def test_bot_user_and_refresh_tokens_never_reach_a_log_line(token, caplog):
    logger = logging.getLogger("test.redact")
    redact = RedactingFilter(["client-secret-value-1"])
    caplog.handler.addFilter(redact)
    try:
        logger.warning("refreshed %s for client-secret-value-1", token)
    finally:
        caplog.handler.removeFilter(redact)
    assert token not in caplog.text and "client-secret-value-1" not in caplog.text
    assert "[redacted]" in caplog.text


def test_workspace_values_are_bounded_by_the_operators_ceilings(env):
    env.setenv("RLM_MAX_PARALLEL_CALLS_CEILING", "20")
    env.setenv("RLM_DAILY_TOKENS_CEILING", "1000000")
    env.setenv("RLM_ALLOWED_MODELS", "anthropic:claude-x, openai:gpt-4o")
    settings = Settings.from_env()
    bounds = bounds_from(settings)
    assert bounds.models == ("openai:gpt-4o", "openai:gpt-4o-mini", "anthropic:claude-x")
    assert parse_value("parallel_calls", "20", bounds) == ("max_parallel_calls", 20)
    assert parse_value("Parallel-Calls", "default", bounds) == ("max_parallel_calls", None)
    assert parse_value("daily_tokens", "1,000,000", bounds) == ("daily_tokens", 1_000_000)
    assert parse_value("sub_model", "Anthropic:claude-x", bounds) == (
        "sub_model",
        "anthropic:claude-x",
    )
    for name, value, why in (
        ("parallel_calls", "21", "at most 20"),
        ("daily_tokens", "0", "cannot be 0 (no limit) here"),
        ("daily_tokens", "1000001", "at most 1,000,000"),
        ("runs_at_once", "-1", "at least 1"),
        ("history_messages", "2.5", "takes a whole number"),
        ("sub_model", "gemini:flash", "not among the models"),
    ):
        with pytest.raises(SettingRefused) as caught:
            parse_value(name, value, bounds)
        assert why in str(caught.value), (name, value)
    assert defaults_from(settings).max_parallel_calls == settings.rlm_max_parallel_calls
