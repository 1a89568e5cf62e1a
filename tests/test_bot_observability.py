"""What on-call sees, over real HTTP: /healthz, /readyz naming what is down, /metrics in
Prometheus' text format counting requests, runs and sub-calls, Socket Mode's listener, JSON
log lines that say which run and workspace they are about, and OpenTelemetry spans."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket

import aiohttp
import pytest
from bot_harness import MAP_EVERY_LINE, harness_settings, mention, wait_until
from prometheus_client.parser import text_string_to_metric_families
from slack_server import APP_TOKEN

from bot.__main__ import serve
from bot.ops.health import Readiness, serve_health
from bot.ops.logs import JsonFormatter
from bot.storage import Store
from bot.storage._engine import create_engine


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then let go)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


def base(bot) -> str:
    return f"http://{bot.http.host}:{bot.http.port}"


async def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, parsed by prometheus_client's own parser."""
    status, text = await get(url)
    assert status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_healthz_answers_ok_without_touching_anything(bot):
    assert await get(base(bot) + "/healthz") == (200, "ok")


async def test_readyz_is_200_naming_each_dependency_when_all_answer(bot):
    status, body = await get(base(bot) + "/readyz")
    assert (status, json.loads(body)) == (200, {"database": "ok"})


async def test_readyz_with_redis_up_names_both(bot):
    redis = pytest.importorskip("redis.asyncio", reason="redis-py is not installed")
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        pytest.skip(f"SKIPPED LOUDLY: no Redis server at 127.0.0.1:6379 ({exc})")
    runner = await serve_health(Readiness(bot.store, client), host="127.0.0.1", port=0)
    try:
        port = runner.addresses[0][1]
        status, body = await get(f"http://127.0.0.1:{port}/readyz")
        assert (status, json.loads(body)) == (200, {"database": "ok", "redis": "ok"})
    finally:
        await runner.cleanup()
        await client.aclose()


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
async def test_readyz_is_503_naming_the_database_when_it_cannot_be_reached(bot, tmp_path, kind):
    if kind == "postgresql":
        pytest.importorskip("asyncpg", reason="asyncpg is not installed")
        url = f"postgresql+asyncpg://rlm@127.0.0.1:{closed_port()}/rlm"
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'gone' / 'rlm.db'}"
    store = Store(create_engine(url))
    if kind == "sqlite":  # its folder is now a plain file: not even root can open it
        (tmp_path / "gone").rmdir()
        (tmp_path / "gone").write_text("not a folder")
    runner = await serve_health(Readiness(store), host="127.0.0.1", port=0)
    try:
        status, body = await get(f"http://127.0.0.1:{runner.addresses[0][1]}/readyz")
    finally:
        await runner.cleanup()
        await store.close()
    checks = json.loads(body)
    assert status == 503 and list(checks) == ["database"]
    assert checks["database"].startswith("error: ")


async def test_readyz_is_503_naming_redis_when_it_cannot_be_reached(bot):
    redis = pytest.importorskip("redis.asyncio", reason="redis-py is not installed")
    client = redis.Redis.from_url(f"redis://127.0.0.1:{closed_port()}/0")
    runner = await serve_health(Readiness(bot.store, client), host="127.0.0.1", port=0)
    try:
        status, body = await get(f"http://127.0.0.1:{runner.addresses[0][1]}/readyz")
    finally:
        await runner.cleanup()
        await client.aclose()
    checks = json.loads(body)
    assert status == 503 and checks["database"] == "ok"
    assert checks["redis"].startswith("error: ") and "Connection" in checks["redis"]


async def test_metrics_count_refused_requests_runs_subcalls_tokens_and_slack_calls(
    bot, slack, llm_server
):
    url = base(bot) + "/metrics"
    before = await scrape(url)
    async with aiohttp.ClientSession() as session:  # unsigned: refused with 401
        async with session.post(bot.http.url, data=b"{}", headers={}) as response:
            assert response.status == 401
    slack.add_message("C1", "alpha\nbeta\ngamma", user="U2")
    llm_server.script_root(MAP_EVERY_LINE)
    reply = await bot.events.event(mention("C1", "<@UBOT> read it", "1700000000.000100"))
    assert reply.status == 200
    await bot.settle()
    [run] = await bot.store.list_runs()
    assert run.status == "finished" and run.subcalls >= 3
    after = await scrape(url)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("rlm_slack_requests_total", outcome="unauthorized") == 1
    assert grew("rlm_slack_requests_total", outcome="ok") == 1
    assert grew("rlm_slack_ack_seconds_count") == 2
    assert grew("rlm_runs_total", status="finished") == 1
    assert grew("rlm_subcalls_total", provider="openai", outcome="ok") == run.subcalls
    assert grew("rlm_tokens_total", team_id="T1", direction="input") == run.input_tokens
    assert grew("rlm_slack_api_calls_total", method="chat.postMessage") >= 1
    assert value(after, "rlm_runs_in_flight", team_id="T1") == 0
    # The engine's adaptive limit for the sub-model's key, read at scrape time.
    widths = [k for k in after if k[0] == "rlm_provider_width"]
    assert widths and all(after[k] >= 1 for k in widths)


async def test_a_rate_limited_slack_answer_is_counted_by_method(bot, slack):
    url = base(bot) + "/metrics"
    before = await scrape(url)
    slack.rate_limit("chat.postMessage", times=1)
    await bot.services.poster.post("C1", "hello")
    after = await scrape(url)
    key = ("rlm_slack_api_rate_limited_total", (("method", "chat.postMessage"),))
    assert after.get(key, 0) - before.get(key, 0) == 1


async def test_json_log_lines_carry_the_run_the_workspace_and_the_replica(
    make_bot, slack, llm_server, caplog
):
    bot = await make_bot(rlm_log_format="json")
    slack.add_message("C1", "The launch is on Friday.", user="U2")
    caplog.set_level(logging.INFO)
    await bot.events.event(mention("C1", "<@UBOT> when?", "1700000000.000200"))
    await bot.settle()
    # What the handler wrote: one JSON object per line.
    lines = [json.loads(line) for line in caplog.text.splitlines()]
    about_run = [
        line for line in lines if re.search(r"\brun 1 (running|finished)", line["message"])
    ]
    assert len(about_run) == 2
    for line in about_run:
        assert line["run_id"] == 1 and line["team_id"] == "T1" and line["replica"]
    # The root logger's handlers write JSON: one object per line.
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler.formatter, JsonFormatter)


async def test_socket_mode_serves_health_readiness_and_metrics_on_its_listener(
    slack, llm_server, database_url, caplog
):
    settings = harness_settings(
        slack_api_url=slack.api_url,
        openai_base_url=llm_server.openai_base_url,
        database_url=database_url,
        slack_app_token=APP_TOKEN,
        slack_signing_secret=None,
        rlm_http_host="127.0.0.1",
        rlm_install_port=0,
    )
    caplog.set_level(logging.INFO, logger="bot")
    stop = asyncio.Event()
    serving = asyncio.create_task(serve(settings, stop))
    try:
        await wait_until(lambda: slack.socket_connections == 1, seconds=20)
        [port] = [
            int(m.group(1))
            for r in caplog.records
            if (m := re.match(r"health, readiness and metrics on port (\d+)", r.getMessage()))
        ]
        root = f"http://127.0.0.1:{port}"
        assert await get(root + "/healthz") == (200, "ok")
        status, body = await get(root + "/readyz")
        assert (status, json.loads(body)) == (200, {"database": "ok"})
        samples = await scrape(root + "/metrics")
        assert any(name == "rlm_slack_api_calls_total" for name, _ in samples)
    finally:
        stop.set()
        await asyncio.wait_for(serving, 20)


async def test_a_run_makes_run_iteration_and_map_spans(bot, slack, llm_server):
    pytest.importorskip("opentelemetry.sdk", reason="opentelemetry-sdk is not installed")
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    # The global provider can be set once per process: reuse it if a test set it before.
    trace.set_tracer_provider(provider)
    current = trace.get_tracer_provider()
    if current is not provider:
        current.add_span_processor(SimpleSpanProcessor(exporter))
    slack.add_message("C1", "one\ntwo", user="U2")
    llm_server.script_root(MAP_EVERY_LINE)
    await bot.events.event(mention("C1", "<@UBOT> read", "1700000000.000300"))
    await bot.settle()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert {"run", "iteration", "map"} <= spans.keys()
    run, iteration, mapped = spans["run"], spans["iteration"], spans["map"]
    assert run.attributes["rlm.run_id"] == 1 and run.attributes["slack.team_id"] == "T1"
    assert iteration.parent.span_id == run.context.span_id
    assert mapped.parent.span_id == iteration.context.span_id
    assert mapped.attributes["rlm.chunks"] >= 2
    assert run.context.trace_id == mapped.context.trace_id
