"""`rlm-bot` as a process: starting, stopping, crashing mid-run and starting again."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

import pytest
from bot_harness import SlackEvents, harness_settings, wait_until
from slack_runs import ANSWER_FOOTER
from slack_server import APP_TOKEN, BOT_TOKEN, SIGNING_SECRET

from bot.__main__ import StartupError, serve
from bot.slack import messages

RLM_BOT = str(Path(sys.executable).parent / "rlm-bot")
PROCESS_KEY = "sk-proc-key-for-rlm-bot-0451"


def bot_env(slack, llm_server, database: Path | str, **extra: str) -> dict[str, str]:
    """Only what the process needs: nothing from the developer's environment leaks in."""
    env = {
        "PATH": "/usr/bin:/bin",
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack.api_url,
        "PORT": "0",
        "RLM_HTTP_HOST": "127.0.0.1",
        # A path is a SQLite file; a string, the URL of the test's database.
        "DATABASE_URL": database
        if isinstance(database, str)
        else f"sqlite+aiosqlite:///{database}",
        "RLM_ROOT_MODEL": "openai:root-model",
        "RLM_SUB_MODEL": "openai:sub-model",
        "OPENAI_API_KEY": "test-key",
        "OPENAI_BASE_URL": llm_server.openai_base_url,
        "RLM_PROGRESS_INTERVAL": "0",
        "RLM_HISTORY_DAYS": "0",
    }
    env.update(extra)
    return env


class BotProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.log: list[str] = []
        self._drain: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, env: dict[str, str], cwd: Path) -> BotProcess:
        proc = await asyncio.create_subprocess_exec(
            RLM_BOT, cwd=cwd, env=env, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        return cls(proc)

    async def port(self) -> int:
        assert self.proc.stderr is not None
        async with asyncio.timeout(30):
            while True:
                line = (await self.proc.stderr.readline()).decode()
                if not line:
                    raise AssertionError("rlm-bot exited:\n" + "".join(self.log))
                self.log.append(line)
                found = re.search(r"listening on port (\d+)", line)
                if found:
                    self._drain = asyncio.create_task(self._keep_reading())
                    return int(found.group(1))

    async def _keep_reading(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.log.append(line.decode())

    async def wait(self) -> int:
        async with asyncio.timeout(30):
            code = await self.proc.wait()
        if self._drain is not None:
            await self._drain
        return code


@pytest.fixture
async def processes():
    started: list[BotProcess] = []
    yield started
    for process in started:
        if process.proc.returncode is None:
            process.proc.kill()
            await process.proc.wait()


async def test_a_crash_mid_run_loses_nothing_and_the_question_can_be_asked_again(
    slack, llm_server, tmp_path, make_bot, processes, database_url
):
    slack.add_message("C1", "something to read", user="U2")

    def first_step(conversation):
        llm_server.root_latency = 30.0  # the run is still thinking when the process dies
        return "Looking.\n```repl\nprint(len(context))\n```"

    llm_server.script_root(first_step)
    env = bot_env(
        slack, llm_server, database_url, RLM_LOG_LEVEL="DEBUG", OPENAI_API_KEY=PROCESS_KEY
    )
    process = await BotProcess.start(env, tmp_path)
    processes.append(process)
    events = SlackEvents(f"http://127.0.0.1:{await process.port()}/slack/events")
    try:
        assert (await events.command("ask anything?")).status == 200
    finally:
        await events.close()
    await wait_until(lambda: llm_server.count("root") == 2, seconds=20)
    root = slack.message_with("C1", "*<@U1> asked:*")
    await wait_until(lambda: _steps(slack, root["ts"]) == [1])

    process.proc.kill()
    assert await process.wait() == -signal.SIGKILL
    assert messages.INTERRUPTED not in slack.posts("C1", thread_ts=root["ts"])
    log = "".join(process.log)
    assert "DEBUG" in log and not [s for s in (BOT_TOKEN, SIGNING_SECRET, PROCESS_KEY) if s in log]

    llm_server.root_latency = 0.0
    bot = await make_bot()  # the same database file
    [run] = await bot.store.list_runs()
    assert run.status == "interrupted" and run.finished_at is not None
    # The dead run's status message now says so, with Retry: no new post in the thread.
    [status] = slack.thread_view("C1", root["ts"])
    assert status["text"] == messages.INTERRUPTED and "Retry" in status["seen"]
    assert status["ts"] == run.status_ts
    # The iteration the thread reported was stored before the crash.
    [iteration] = await bot.store.list_iterations(run.id)
    assert iteration.iteration == 1 and iteration.code == "print(len(context))"
    assert run.iterations == 1

    # Asked again, the same question runs to the end.
    await bot.events.command("ask anything?")
    await bot.settle()
    first, again = await bot.store.list_runs()
    assert (first.status, again.status, again.question) == ("interrupted", "finished", "anything?")
    second_root = slack.calls_to("chat.postMessage")[-1].params["thread_ts"]
    assert ANSWER_FOOTER.search(slack.posts("C1", thread_ts=second_root)[-1])


def _steps(slack, thread_ts: str) -> list[int]:
    """The steps a thread's live status shows as done (with their time)."""
    seen = "\n".join(m["seen"] for m in slack.thread_view("C1", thread_ts))
    return [int(n) for n in re.findall(r"^\*Step (\d+):\*.* \d+\.\d s$", seen, re.M)]


async def test_shutdown_mid_run_marks_it_interrupted_and_tells_the_thread(
    make_bot, slack, llm_server
):
    # What SIGTERM leads to in rlm-bot: the HTTP server closes, then the services.
    bot = await make_bot()
    slack.add_message("C1", "something to read", user="U2")
    llm_server.root_latency = 30.0
    await bot.events.command("ask anything?")
    await wait_until(lambda: llm_server.count("root") == 1, seconds=20)
    await bot.close()

    root = slack.message_with("C1", "*<@U1> asked:*")
    # The status itself says so (with Retry): still one message in the thread.
    [status] = slack.thread_view("C1", root["ts"])
    assert status["text"] == messages.INTERRUPTED and "Retry" in status["seen"]
    llm_server.root_latency = 0.0
    bot = await make_bot()
    [run] = await bot.store.list_runs()
    assert run.status == "interrupted"
    # Told once: the restart finds nothing left unfinished.
    assert slack.thread_texts("C1", root["ts"]) == [messages.INTERRUPTED]


async def test_without_a_bot_token_the_process_says_what_to_set(
    slack, llm_server, tmp_path, processes
):
    env = bot_env(slack, llm_server, tmp_path / "rlm.db")
    del env["SLACK_BOT_TOKEN"]
    process = await BotProcess.start(env, tmp_path)
    processes.append(process)
    assert process.proc.stderr is not None
    async with asyncio.timeout(30):
        err = (await process.proc.stderr.read()).decode()
    assert await process.wait() == 2
    assert err.count("\n") == 1
    assert err.startswith("rlm-bot: SLACK_BOT_TOKEN is not set: set it to the app's bot token")
    assert slack.calls == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"openai_api_key": None}, "OPENAI_API_KEY"),
        ({"database_url": "nonsense://"}, "DATABASE_URL nonsense:// cannot be used"),
    ],
)
async def test_a_setup_the_engine_or_database_rejects_stops_the_start(
    slack, llm_server, tmp_path, monkeypatch, change, expected
):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    values = {"database_url": f"sqlite+aiosqlite:///{tmp_path / 'rlm.db'}"} | change
    settings = harness_settings(
        slack_api_url=slack.api_url, openai_base_url=llm_server.openai_base_url, **values
    )
    with pytest.raises(StartupError) as caught:
        await serve(settings)
    assert expected in str(caught.value) and "\n" not in str(caught.value)
    assert slack.calls == []


async def test_socket_mode_receives_commands_and_events_over_the_websocket(
    slack, llm_server, database_url
):
    slack.add_message("C1", "The launch is on Friday.", user="U2")
    llm_server.sub_responder = lambda prompt: "Friday."
    settings = harness_settings(
        slack_api_url=slack.api_url,
        openai_base_url=llm_server.openai_base_url,
        database_url=database_url,
        slack_app_token=APP_TOKEN,
        slack_signing_secret=None,
        rlm_install_port=0,  # the health listener on a free port
    )
    stop = asyncio.Event()
    serving = asyncio.create_task(serve(settings, stop))
    try:
        await wait_until(lambda: slack.socket_connections == 1, seconds=20)
        command = {
            "team_id": "T1", "channel_id": "C1", "user_id": "U1", "command": "/rlm",
            "text": "ask when is the launch?", "response_url": f"{slack.url}/response/1",
        }  # fmt: skip
        help_id = slack.send_socket("slash_commands", command | {"text": "help"})
        ask_id = slack.send_socket("slash_commands", command)
        await wait_until(lambda: {help_id, ask_id} <= slack.socket_acks.keys())
        assert slack.socket_acks[help_id]["text"] == messages.USAGE
        await wait_until(
            lambda: any(ANSWER_FOOTER.search(p) for p in slack.posts("C1")), seconds=20
        )
        root = slack.message_with("C1", "*<@U1> asked:*")
        assert slack.posts("C1", thread_ts=root["ts"])[-1].startswith("Friday.")
    finally:
        stop.set()
        await asyncio.wait_for(serving, 20)
    assert slack.calls_to("apps.connections.open")[0].token == APP_TOKEN


async def test_a_required_sandbox_that_cannot_work_stops_the_start_with_one_line(
    slack, llm_server, tmp_path, processes
):
    empty = tmp_path / "no-tools"  # neither bwrap nor unshare can be found on this PATH
    empty.mkdir()
    database = tmp_path / "rlm.db"
    env = bot_env(slack, llm_server, database, PATH=str(empty), RLM_REQUIRE_SANDBOX="true")
    process = await BotProcess.start(env, tmp_path)
    processes.append(process)
    assert process.proc.stderr is not None
    async with asyncio.timeout(30):
        err = (await process.proc.stderr.read()).decode()
    assert await process.wait() == 2
    assert err.count("\n") == 1
    assert err.startswith(
        "rlm-bot: The REPL sandbox requires isolation but no method works on this machine ("
    )
    assert "RLM_REQUIRE_SANDBOX=true" in err
    assert slack.calls == [] and not database.exists()
