"""Settings: DESIGN's variables and defaults, `.env`, and one line naming each bad variable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.settings import Settings, SettingsError

VARIABLES = [name.upper() for name in Settings.model_fields]


@pytest.fixture
def env(monkeypatch, tmp_path):
    """A clean environment (none of the app's variables) in an empty directory."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1-2-abc")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "shh")
    return monkeypatch


def test_the_defaults_are_designs(env):
    settings = Settings.from_env()
    assert settings.slack_api_url == "https://slack.com/api/"
    assert settings.port == 3000
    assert settings.database_url == "sqlite+aiosqlite:///rlm.db"
    assert (settings.rlm_root_model, settings.rlm_sub_model) == (
        "openai:gpt-4o",
        "openai:gpt-4o-mini",
    )
    assert settings.rlm_max_parallel_calls == 10
    assert settings.slack_app_token is None and not settings.socket_mode
    assert settings.openai_api_key is None and settings.openai_base_url is None


def test_a_dotenv_file_is_read_and_the_environment_wins(env, tmp_path):
    (tmp_path / ".env").write_text(
        "PORT=8080\nRLM_SUB_MODEL=anthropic:claude-x\nOPENAI_BASE_URL=\nRLM_MAX_PARALLEL_CALLS=4\n"
    )
    env.setenv("RLM_MAX_PARALLEL_CALLS", "6")
    settings = Settings.from_env()
    assert settings.port == 8080
    assert settings.rlm_sub_model == "anthropic:claude-x"
    assert settings.openai_base_url is None  # blank means unset
    assert settings.rlm_max_parallel_calls == 6


def test_socket_mode_needs_no_signing_secret(env):
    env.delenv("SLACK_SIGNING_SECRET")
    env.setenv("SLACK_APP_TOKEN", "xapp-1-abc")
    assert Settings.from_env().socket_mode


def test_the_api_url_gets_its_trailing_slash(env):
    env.setenv("SLACK_API_URL", "http://127.0.0.1:9999/api")
    assert Settings.from_env().slack_api_url == "http://127.0.0.1:9999/api/"


def test_provider_endpoints_follow_the_model_spec(env):
    env.setenv("ANTHROPIC_API_KEY", "sk-ant")
    env.setenv("ANTHROPIC_BASE_URL", "http://llm.local")
    settings = Settings.from_env()
    assert settings.provider_endpoint("anthropic:claude") == ("sk-ant", "http://llm.local")
    assert settings.provider_endpoint("openai:gpt-4o") == (None, None)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("SLACK_BOT_TOKEN", None, "SLACK_BOT_TOKEN is not set: set it to the app's bot token"),
        ("SLACK_BOT_TOKEN", "  ", "SLACK_BOT_TOKEN is not set"),
        ("SLACK_BOT_TOKEN", "xoxp-user", "SLACK_BOT_TOKEN must be a bot token starting with xoxb-"),
        ("SLACK_SIGNING_SECRET", None, "SLACK_SIGNING_SECRET is not set: HTTP mode needs it"),
        ("SLACK_APP_TOKEN", "xoxb-wrong", "SLACK_APP_TOKEN must be an app-level token"),
        ("SLACK_API_URL", "ftp://slack", "SLACK_API_URL=ftp://slack is not valid: must be an"),
        ("PORT", "eighty", "PORT=eighty is not valid"),
        ("PORT", "70000", "PORT=70000 is not valid"),
        ("DATABASE_URL", "rlm.db", "DATABASE_URL=rlm.db is not valid: must be a SQLAlchemy"),
        ("RLM_ROOT_MODEL", "gpt-4o", "RLM_ROOT_MODEL=gpt-4o is not valid: must be provider:model"),
        ("RLM_SUB_MODEL", "mistral:x", "RLM_SUB_MODEL=mistral:x is not valid"),
        ("RLM_MAX_PARALLEL_CALLS", "0", "RLM_MAX_PARALLEL_CALLS=0 is not valid"),
        ("RLM_MAX_FILE_BYTES", "-1", "RLM_MAX_FILE_BYTES=-1 is not valid"),
        ("RLM_PROMPT_MODE", "wild", "RLM_PROMPT_MODE=wild is not valid"),
        ("RLM_MAX_SUBCALLS", "-1", "RLM_MAX_SUBCALLS=-1 is not valid"),
        ("RLM_MAX_RUN_TOKENS", "lots", "RLM_MAX_RUN_TOKENS=lots is not valid"),
        ("RLM_MAX_RUN_SECONDS", "-5", "RLM_MAX_RUN_SECONDS=-5 is not valid"),
        ("RLM_DAILY_TOKENS", "1e", "RLM_DAILY_TOKENS=1e is not valid"),
        ("RLM_MAX_MAP_CHUNKS", "0", "RLM_MAX_MAP_CHUNKS=0 is not valid"),
        ("RLM_MAX_PROMPT_BYTES", "64MB", "RLM_MAX_PROMPT_BYTES=64MB is not valid"),
        ("RLM_MAX_REQUEST_BYTES", "100", "RLM_MAX_REQUEST_BYTES=100 is not valid"),
        ("RLM_PROVIDER_TIMEOUT", "0", "RLM_PROVIDER_TIMEOUT=0 is not valid"),
        ("RLM_SANDBOX", "docker", "RLM_SANDBOX=docker is not valid: Input should be 'auto',"),
        ("RLM_REQUIRE_SANDBOX", "maybe", "RLM_REQUIRE_SANDBOX=maybe is not valid"),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_variable(env, name, value, expected):
    if value is None:
        env.delenv(name)
    else:
        env.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        Settings.from_env()
    message = str(caught.value)
    assert message.startswith(expected), message
    assert "\n" not in message and message.endswith(".")


def test_the_budget_request_and_sandbox_defaults(env):
    settings = Settings.from_env()
    assert settings.rlm_max_iterations == 20
    assert (settings.rlm_max_subcalls, settings.rlm_max_run_tokens) == (2000, 2_000_000)
    assert settings.rlm_max_run_seconds == 600.0
    assert settings.rlm_daily_tokens == 0  # no daily limit
    assert (settings.rlm_max_map_chunks, settings.rlm_max_prompt_bytes) == (10_000, 64 * 2**20)
    assert settings.rlm_max_request_bytes == 1_048_576
    assert (settings.rlm_provider_timeout, settings.rlm_provider_retries) == (120.0, 4)
    assert (settings.rlm_sandbox, settings.rlm_require_sandbox) == ("auto", False)


def test_the_request_caps_are_read_from_the_environment(env):
    env.setenv("RLM_MAX_MAP_CHUNKS", "500")
    env.setenv("RLM_MAX_PROMPT_BYTES", "1048576")
    settings = Settings.from_env()
    assert (settings.rlm_max_map_chunks, settings.rlm_max_prompt_bytes) == (500, 1_048_576)


def test_require_sandbox_reads_yes_and_no(env):
    env.setenv("RLM_REQUIRE_SANDBOX", "true")
    env.setenv("RLM_SANDBOX", "bwrap")
    settings = Settings.from_env()
    assert settings.rlm_require_sandbox and settings.rlm_sandbox == "bwrap"


def test_no_sandbox_and_a_required_sandbox_contradict(env):
    env.setenv("RLM_SANDBOX", "none")
    env.setenv("RLM_REQUIRE_SANDBOX", "1")
    with pytest.raises(SettingsError) as caught:
        Settings.from_env()
    assert str(caught.value) == (
        "RLM_SANDBOX=none contradicts RLM_REQUIRE_SANDBOX=true; choose one."
    )


def test_the_secrets_are_every_configured_credential(env):
    env.setenv("OPENAI_API_KEY", "sk-one")
    env.setenv("GEMINI_API_KEY", "  ")
    env.setenv("DATABASE_URL", "postgresql+asyncpg://rlm:db-pass-0451@db.local/rlm")
    env.setenv("ANTHROPIC_BASE_URL", "https://gw:gw-pass-0451@llm.local/")
    assert set(Settings.from_env().secrets) == {
        "xoxb-1-2-abc", "shh", "sk-one", "db-pass-0451", "gw-pass-0451"
    }  # fmt: skip


def test_a_secret_is_never_echoed_in_the_error(env):
    env.setenv("SLACK_BOT_TOKEN", "xoxp-very-secret-value")
    with pytest.raises(SettingsError) as caught:
        Settings.from_env()
    assert "very-secret" not in str(caught.value)


def test_the_manifest_asks_for_what_the_app_uses():
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "manifest.yml").read_text()
    listed = set(re.findall(r"^\s+- ([a-z_.:]+)\s*(?:#.*)?$", text, re.M))
    scopes = {
        "commands", "app_mentions:read", "chat:write", "channels:history", "groups:history",
        "files:read", "users:read", "channels:read", "groups:read", "files:write",
    }  # fmt: skip
    events = {"app_mention", "file_shared", "message.channels", "message.groups"}
    events |= {"app_uninstalled", "tokens_revoked"}  # uninstalls (bot/installs.py)
    # Conversations with the app (agent_view, issue 19), DMs and App Home (issue 9).
    scopes |= {"assistant:write", "im:history", "reactions:write"}
    events |= {"app_home_opened", "app_context_changed", "message.im"}
    events |= {"file_change", "file_deleted"}  # keeping stored file text true to Slack
    assert listed == scopes | events
    assert re.search(r"^  agent_view:\n    agent_description: \S", text, re.M)
    assert not re.search(r"assistant_view:|assistant_description", text)
    # The manifest's suggested prompts are the ones the app sets.
    from bot.slack.surface_messages import PANE_PROMPTS

    prompts = re.findall(r"^      - title: (.+)\n        message: (.+)$", text, re.M)
    assert prompts == [tuple(p) for p in PANE_PROMPTS]
    assert re.search(r"^    home_tab_enabled: true", text, re.M)
    assert re.search(r"^\s+- command: /rlm$", text, re.M)
    assert re.search(r"^\s+socket_mode_enabled: true$", text, re.M)
    assert re.search(r"^\s+- https://example.com/slack/oauth_redirect$", text, re.M)
    # The run's buttons need interactivity.
    assert re.search(r"^  interactivity:\n(\s+#.*\n)*\s+is_enabled: true$", text, re.M)


def test_oauth_installs_ask_for_the_manifests_scopes():
    from bot.settings import DEFAULT_BOT_SCOPES

    text = (Path(__file__).resolve().parents[1] / "manifest.yml").read_text()
    bot_scopes = text.split("    bot:\n", 1)[1].split("settings:", 1)[0]
    listed = set(re.findall(r"^\s+- ([a-z_.:]+)", bot_scopes, re.M))
    assert set(DEFAULT_BOT_SCOPES.split(",")) == listed
