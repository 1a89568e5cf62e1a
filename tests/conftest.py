"""Shared pytest fixtures; each concern keeps its fixtures in one marked block."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

# tests/ is on sys.path because this conftest lives there (pytest's default import mode).
from fake_llm import FakeLLMServer

from rlm.clients import AnthropicInterface, GeminiInterface, LLMInterface, OpenAIInterface

# --- fake LLM server ---------------------------------------------------------------------------
# `llm_server` is a FakeLLMServer on loopback (see tests/fake_llm.py). The factory fixtures
# build real provider interfaces pointed at it, with a dummy key, few retries and short
# backoff; whatever they opened on the test's event loop is closed at teardown.

TEST_API_KEY = "test-key"
_INTERFACES: dict[str, type[LLMInterface]] = {
    "openai": OpenAIInterface,
    "anthropic": AnthropicInterface,
    "gemini": GeminiInterface,
}

MakeLLM = Callable[..., LLMInterface]


@pytest.fixture
def llm_server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        yield server


def base_url_for(server: FakeLLMServer, provider: str) -> str:
    return {
        "openai": server.openai_base_url,
        "anthropic": server.anthropic_base_url,
        "gemini": server.gemini_base_url,
    }[provider]


@pytest.fixture
async def make_llm(llm_server: FakeLLMServer) -> AsyncIterator[MakeLLM]:
    """`make_llm("openai", model="sub-model", **kw)`: an interface talking to `llm_server`."""
    made: list[LLMInterface] = []

    def make(provider: str, model: str = "sub-model", **kw: Any) -> LLMInterface:
        kw.setdefault("api_key", TEST_API_KEY)
        kw.setdefault("base_url", base_url_for(llm_server, provider))
        kw.setdefault("max_retries", 2)
        kw.setdefault("retry_base_delay", 0.01)
        kw.setdefault("timeout", 10.0)
        llm = _INTERFACES[provider](model, **kw)
        made.append(llm)
        return llm

    yield make
    for llm in made:
        await llm.aclose()


@pytest.fixture
def openai_llm(make_llm: MakeLLM) -> Callable[..., OpenAIInterface]:
    return lambda model="sub-model", **kw: make_llm("openai", model, **kw)


@pytest.fixture
def anthropic_llm(make_llm: MakeLLM) -> Callable[..., AnthropicInterface]:
    return lambda model="sub-model", **kw: make_llm("anthropic", model, **kw)


@pytest.fixture
def gemini_llm(make_llm: MakeLLM) -> Callable[..., GeminiInterface]:
    return lambda model="sub-model", **kw: make_llm("gemini", model, **kw)


# --- end fake LLM server -----------------------------------------------------------------------


# --- slack app ---------------------------------------------------------------------------------
# `slack` is a SlackServer on loopback (tests/slack_server.py) holding users U1 (Alice) and
# U2 (Bob) and channel C1 (#general). `make_bot(**settings)` starts the real app over HTTP
# against it and `llm_server`, on the test's database (tests/bot_harness.py); `bot` is one with
# default settings. Everything started is closed at teardown.

from collections.abc import Awaitable  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

from slack_server import SlackServer  # noqa: E402

if TYPE_CHECKING:
    from bot_harness import BotHarness


@pytest.fixture
def slack() -> Iterator[SlackServer]:
    with SlackServer() as server:
        server.add_user("U1", "Alice")
        server.add_user("U2", "Bob Jones", display_name="bob")
        server.add_channel("C1", "general")
        yield server


@pytest.fixture
async def make_bot(
    slack: SlackServer, llm_server: FakeLLMServer, database_url: str
) -> AsyncIterator[Callable[..., Awaitable[BotHarness]]]:
    # Imported here so that tests which never start the app do not import it.
    from bot_harness import BotHarness, harness_settings

    started: list[BotHarness] = []

    async def make(**overrides: Any) -> BotHarness:
        settings = harness_settings(
            slack_api_url=slack.api_url,
            openai_base_url=llm_server.openai_base_url,
            database_url=database_url,
            **overrides,
        )
        harness = await BotHarness(settings, response_base=slack.url).start()
        started.append(harness)
        return harness

    yield make
    for harness in started:
        await harness.close()


@pytest.fixture
async def bot(make_bot: Callable[..., Awaitable[BotHarness]]) -> BotHarness:
    return await make_bot()


# --- end slack app -----------------------------------------------------------------------------


# --- databases ---------------------------------------------------------------------------------
# `database_url` is the test's database: a SQLite file in tmp_path, or, when the suite is
# pointed at PostgreSQL (TEST_DATABASE_URL / DATABASE_URL, see tests/databases.py), a fresh
# database made for this test and dropped after it. `databases.new()` makes more of them.

import os  # noqa: E402

from databases import ON_POSTGRES, Databases  # noqa: E402


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With RLM_TEST_DATABASE_ONLY=1 on PostgreSQL (`make test-postgres`), run only the tests
    that store anything: the rest ran on SQLite already and would test nothing new."""
    if not (ON_POSTGRES and os.environ.get("RLM_TEST_DATABASE_ONLY") == "1"):
        return
    keep = [item for item in items if "databases" in getattr(item, "fixturenames", ())]
    config.hook.pytest_deselected(items=[item for item in items if item not in keep])
    items[:] = keep


@pytest.fixture
def databases(tmp_path: Any) -> Iterator[Databases]:
    made = Databases(tmp_path)
    yield made
    made.close()


@pytest.fixture
def database_url(databases: Databases) -> str:
    return databases.new()


# --- end databases -----------------------------------------------------------------------------
