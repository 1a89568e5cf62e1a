"""The REPL worker, for real: a separate interpreter that holds the context between cells."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from rlm.repl import REPLSession, SandboxLimits


async def _no_llm(prompt: str) -> str:
    raise AssertionError("no sub-calls expected")


async def _no_parallel(template: str, chunks: list[str]) -> list[str]:
    raise AssertionError("no sub-calls expected")


def session(context: str | list[str] = "hello world", **kw: object) -> REPLSession:
    kw.setdefault("llm_query", _no_llm)
    kw.setdefault("parallel_query", _no_parallel)
    return REPLSession(context, **kw)  # type: ignore[arg-type]


async def test_namespace_and_context_persist_between_cells() -> None:
    async with session(["a", "bb"]) as repl:
        first = await repl.run_cell(
            "n = sum(len(c) for c in context)\nprint(type(context).__name__)"
        )
        second = await repl.run_cell("n * 10")
        assert (first.output, first.error) == ("list\n", False)
        assert second.output == "30\n"


async def test_errors_come_back_as_tracebacks_of_the_cell_only() -> None:
    async with session() as repl:
        result = await repl.run_cell("x = 1\nundefined_name + x")
        assert result.error
        assert "NameError" in result.output and "undefined_name" in result.output
        assert "_worker.py" not in result.output
        assert (await repl.run_cell("print(x)")).output == "1\n"


async def test_worker_environment_holds_no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-host-secret")
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-host-secret")
    async with session() as repl:
        result = await repl.run_cell(
            "import os\nprint(sorted(os.environ))\nprint(os.getcwd())\nprint(os.getppid())"
        )
        assert "OPENAI_API_KEY" not in result.output and "SLACK_BOT_TOKEN" not in result.output
        env_line, cwd_line, _ = result.output.splitlines()
        assert "secret" not in env_line
        assert cwd_line == repl.workdir and cwd_line != os.getcwd()
        assert repl.pid != os.getpid()


async def test_worker_is_a_fresh_interpreter_not_a_fork() -> None:
    async with session() as repl:
        result = await repl.run_cell(
            "import sys\nprint('pytest' in sys.modules, 'rlm' in sys.modules)"
        )
        assert result.output == "False False\n"


async def test_hanging_cell_is_stopped_reported_and_worker_replaced() -> None:
    async with session("ctx", cell_timeout=1.0) as repl:
        await repl.run_cell("kept = 1")
        old_pid = repl.pid
        started = time.perf_counter()
        result = await repl.run_cell("while True:\n    pass")
        assert time.perf_counter() - started < 10
        assert result.error and result.worker_lost
        assert "1 s limit" in result.output
        assert repl.pid != old_pid
        after = await repl.run_cell("print(context)\nprint('kept' in globals())")
        assert after.output == "ctx\nFalse\n"


async def test_crashing_worker_is_reported_and_replaced() -> None:
    async with session("ctx") as repl:
        result = await repl.run_cell("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
        assert result.error and result.worker_lost
        assert "crashed" in result.output and "SIGKILL" in result.output
        assert (await repl.run_cell("print(len(context))")).output == "3\n"


async def test_exit_in_code_is_an_error_not_a_lost_worker() -> None:
    async with session() as repl:
        result = await repl.run_cell("raise SystemExit(3)")
        assert result.error and not result.worker_lost
        assert (await repl.run_cell("print('alive')")).output == "alive\n"


async def test_memory_limit_stops_runaway_allocation() -> None:
    async with session(limits=SandboxLimits(memory_mb=512)) as repl:
        result = await repl.run_cell("blob = bytearray(2 * 1024 ** 3)")
        assert result.error
        assert "MemoryError" in result.output or result.worker_lost
        assert (await repl.run_cell("print('alive')")).output == "alive\n"


async def test_huge_output_is_capped_in_the_worker() -> None:
    async with session() as repl:
        result = await repl.run_cell("for _ in range(200_000):\n    print('x' * 100)")
        assert len(result.output) < 1_100_000
        assert "dropped" in result.output


async def test_host_event_loop_keeps_running_during_a_busy_cell() -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async with session() as repl:
        task = asyncio.create_task(ticker())
        await repl.run_cell(
            "import time\nend = time.time() + 0.5\nwhile time.time() < end:\n    pass"
        )
        task.cancel()
    assert ticks >= 20


async def test_subcalls_are_served_by_the_host_and_do_not_count_against_the_cell_limit() -> None:
    async def slow_parallel(template: str, chunks: list[str]) -> list[str]:
        await asyncio.sleep(1.5)
        return [template.replace("{chunk}", c).upper() for c in chunks]

    async def llm(prompt: str) -> str:
        return f"<{prompt}>"

    async with session(llm_query=llm, parallel_query=slow_parallel, cell_timeout=1.0) as repl:
        result = await repl.run_cell(
            "print(parallel_query('q {chunk}', ['a', 'b']), llm_query('hi'))"
        )
        assert result.output == "['Q A', 'Q B'] <hi>\n"


async def test_a_100_mb_context_loads() -> None:
    context = ("0123456789" * 100 + "\n") * 100_000  # about 100 MB
    async with session(context, cell_timeout=60) as repl:
        result = await repl.run_cell("print(len(context), context.count('\\n'))")
        assert result.output == f"{len(context)} 100000\n"
