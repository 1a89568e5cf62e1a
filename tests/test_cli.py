"""The `rlm` command, run as a real process against the loopback LLM server."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

from fake_llm import FakeLLMServer

from tests.scripted_llm import repl


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rlm", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def cli_env(server: FakeLLMServer, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL"))}
    env |= {"OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": server.openai_base_url}
    return env | extra


def make_docs(root: Path) -> Path:
    docs = root / "docs"
    (docs / "nested").mkdir(parents=True)
    (docs / "a.txt").write_text("apples are red")
    (docs / "nested" / "b.md").write_text("bananas are yellow")
    (docs / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00binary")
    (docs / ".hidden").write_text("not read")
    return docs


def test_ask_over_a_directory(llm_server: FakeLLMServer, tmp_path: Path) -> None:
    llm_server.script_root(
        repl("names = [c.splitlines()[0] for c in context]\nprint(names)"),
        repl("out = parallel_query('Fruit? {chunk}', context)", "FINAL_VAR(out)"),
    )
    docs = make_docs(tmp_path)
    trajectory = tmp_path / "run.jsonl"
    result = run_cli(
        "ask",
        "Which fruits?",
        str(docs),
        "--root",
        "openai:root-model",
        "--sub",
        "openai:sub-model",
        "--parallel",
        "3",
        "--trajectory",
        str(trajectory),
        env=cli_env(llm_server),
    )
    assert result.returncode == 0, result.stderr
    answer = result.stdout.strip()
    assert "apples are red" in answer and "bananas are yellow" in answer
    assert "binary" not in answer and "not read" not in answer
    steps = [json.loads(line) for line in trajectory.read_text().splitlines()]
    assert [s["subcalls"] for s in steps] == [0, 2]
    assert "a.txt" in steps[0]["outputs"][0] and "b.md" in steps[0]["outputs"][0]
    assert "iteration 2: 2 sub-calls" in result.stderr  # plain progress lines off a terminal


def test_missing_key_is_one_line(llm_server: FakeLLMServer, tmp_path: Path) -> None:
    env = cli_env(llm_server)
    del env["OPENAI_API_KEY"]
    result = run_cli("ask", "q", str(make_docs(tmp_path)), env=env)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "OPENAI_API_KEY" in result.stderr


def test_missing_and_binary_files_are_one_line(llm_server: FakeLLMServer, tmp_path: Path) -> None:
    missing = run_cli("ask", "q", str(tmp_path / "nope.txt"), env=cli_env(llm_server))
    assert missing.returncode == 2 and "no such file" in missing.stderr
    assert missing.stderr.count("\n") == 1
    binary = run_cli("ask", "q", str(make_docs(tmp_path) / "image.png"), env=cli_env(llm_server))
    assert binary.returncode == 2 and "binary" in binary.stderr


def test_bad_model_spec_is_one_line(llm_server: FakeLLMServer, tmp_path: Path) -> None:
    result = run_cli(
        "ask", "q", str(make_docs(tmp_path)), "--root", "nonsense", env=cli_env(llm_server)
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "nonsense" in result.stderr


def test_progress_bar_on_a_terminal_counts_sub_calls_as_they_finish() -> None:
    from rlm import IterationFinished, IterationStarted, SubcallProgress
    from rlm.cli import Progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    progress = Progress(screen)
    progress(IterationStarted(1))
    for done in range(1, 5):
        progress(SubcallProgress(1, done, 4, 0))
    assert screen.getvalue().rsplit("\r", 1)[-1].startswith("\x1b[2Kiteration 1  [####")
    assert "4/4  4 sub-calls" in screen.getvalue()
    progress(IterationFinished(1, "", (), (), 4, 0, 0, 0.1))
    progress(IterationStarted(2))
    assert "iteration 2  4 sub-calls" in screen.getvalue()


def test_the_summary_line_reports_tokens_and_cost(
    llm_server: FakeLLMServer, tmp_path: Path
) -> None:
    llm_server.script_root(
        repl("out = parallel_query('Fruit? {chunk}', context)", "FINAL_VAR(out)")
    )
    llm_server.cache_usage = lambda kind, tokens: (tokens // 2, 0)
    prices = tmp_path / "prices.json"
    prices.write_text(
        json.dumps(
            {
                "openai:root-model": {"input": 1000, "cached_input": 100, "output": 4000},
                "openai:sub-model": {"input": 1000, "output": 4000},
            }
        )
    )
    docs = make_docs(tmp_path)
    args = ["ask", "Which fruits?", str(docs), "--root", "openai:root-model"]
    args += ["--sub", "openai:sub-model", "--prices", str(prices), "--max-cost", "100"]
    result = run_cli(*args, env=cli_env(llm_server))
    assert result.returncode == 0, result.stderr
    summary = result.stderr.strip().splitlines()[-1]
    assert summary.startswith("1 iteration · 2 sub-calls · ")
    assert "input cached)" in summary and "cost $0." in summary
    llm_server.script_root("FINAL(none)")
    unpriced = run_cli(*args[:7], env=cli_env(llm_server))
    assert "cost unknown" in unpriced.stderr  # the fake's models are not in the shipped table
    bad = run_cli(*args[:3], "--prices", str(docs / "a.txt"), env=cli_env(llm_server))
    assert bad.returncode == 2 and "price table could not be read" in bad.stderr
