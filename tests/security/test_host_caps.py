"""Sizes and modes held by the host: a huge answer or output is cut as it is read, never held
whole, and with sub-calls off no request reaches a model, whatever the cell does."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fake_llm import FakeLLMServer
from scripted_llm import ScriptedLLM, repl

from rlm import RLM
from rlm.clients._base import LLMInterface
from rlm.repl import REPLSession, SandboxLimits
from rlm.repl._host import MSG_SUBCALLS_OFF
from tests.security.attacks import skip_unless_available
from tests.security.conftest import Heartbeat

BIG = 250_000_000  # characters: what an answer or a print tries to hand the host
HELD = 64 * 2**20  # what the host may grow by while it reads one (it keeps about 4 MB)
CUT_NOTE = "[The answer was cut here: "


def _assert_cut(answer: str, limit: int, heartbeat: Heartbeat) -> None:
    assert len(answer) < limit + 200 and CUT_NOTE in answer, answer[-300:]
    assert f"{BIG - limit:,} more characters were left out" in answer, answer[-300:]
    assert heartbeat.peak_growth() < HELD, f"the host grew by {heartbeat.peak_growth() >> 20} MB"
    assert heartbeat.worst < 0.5, f"the host's loop stalled for {heartbeat.worst:.2f} s"


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(repl(f"FINAL('a' * {BIG})"), id="final-in-code"),
        pytest.param(repl(f"big = 'b' * {BIG}", "FINAL_VAR(big)"), id="final-var"),
        pytest.param(repl(f"big = 'c' * {BIG}\nFINAL_VAR('big')"), id="final-var-in-code"),
    ],
)
async def test_a_huge_answer_is_cut_as_the_host_reads_it(reply: str, heartbeat: Heartbeat) -> None:
    skip_unless_available("auto")
    limit = 1_000_000
    rlm = RLM(ScriptedLLM(reply), max_answer_chars=limit)
    heartbeat.reset()
    answer, trajectory = await rlm.query_async("q", "context")
    _assert_cut(answer, limit, heartbeat)
    assert trajectory[-1]["answer_cut"] == BIG - limit


async def test_the_root_models_own_final_text_is_cut_too() -> None:
    root = ScriptedLLM("FINAL(" + "d" * 5000 + ")")
    answer, trajectory = await RLM(root, max_answer_chars=1000).query_async("q", "c")
    assert answer.startswith("d" * 1000) and "4,000 more characters were left out" in answer
    assert trajectory[-1]["answer_cut"] == 4000


async def _unused(*args: object) -> str:
    raise AssertionError("no sub-calls here")


@pytest.mark.parametrize("method", ["auto", "none"])
async def test_a_huge_print_is_cut_by_the_host_whatever_the_worker_keeps(
    method: str, heartbeat: Heartbeat
) -> None:
    """The cell lifts the worker's own cap first: only the host's holds."""
    skip_unless_available(method)
    limits = SandboxLimits(isolation=method, require_isolation=method != "none")
    async with REPLSession(
        "context", llm_query=_unused, parallel_query=_unused, cell_timeout=60, limits=limits
    ) as session:
        heartbeat.reset()
        result = await session.run_cell(
            f"import sys\nsys.stdout.cap = 10 ** 12\nprint('e' * {BIG}, end='')"
        )
    limit = SandboxLimits().max_cell_output_chars
    assert not result.worker_lost, result.output[-500:]
    assert result.output.startswith("e" * 1000) and len(result.output) < limit + 200
    assert f"{BIG - limit:,} more characters were left out" in result.output
    assert heartbeat.peak_growth() < HELD, f"the host grew by {heartbeat.peak_growth() >> 20} MB"


# -- sub-calls off: the host refuses them ------------------------------------------------------

_FLIP = """
llm_query.__self__.subcalls_enabled = True
try:
    print('answered', llm_query('hello'))
except RuntimeError as exc:
    print('refused:', exc)
"""

_FORGE = """
import json, os, stat
channel = llm_query.__self__.channel
frame = json.dumps({'op': 'llm_query', 'prompt': 'hello'}).encode()
for fd in map(int, os.listdir('/proc/self/fd')):
    try:
        if stat.S_ISFIFO(os.fstat(fd).st_mode) and fd != 2:
            os.write(fd, len(frame).to_bytes(4, 'big') + frame)
    except OSError:
        pass  # the pipe the host writes to
print('reply:', channel.receive())
"""


@pytest.mark.parametrize("code", [_FLIP, _FORGE], ids=["flip-the-switch", "forge-a-frame"])
async def test_with_subcalls_off_the_host_refuses_them(
    code: str, llm_server: FakeLLMServer, openai_llm: Callable[..., LLMInterface]
) -> None:
    skip_unless_available("auto")
    root = ScriptedLLM(repl(code), "FINAL(done)")
    rlm = RLM(root, sub_llm=openai_llm(), prompt_mode="no_subcalls")
    answer, trajectory = await rlm.query_async("q", "context")
    output = trajectory[0]["outputs"][0]
    assert MSG_SUBCALLS_OFF in output, output
    assert "answered" not in output
    assert answer == "done"
    assert not llm_server.requests, "a sub-call reached the model"
