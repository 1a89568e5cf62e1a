"""A loopback LLM server that speaks the OpenAI, Anthropic and Gemini wire protocols.

Tests start it in-process (`with FakeLLMServer() as server:`); it runs on its own event loop
in a background thread, so sync tests, async tests and the sync bridge can all reach it.
Benchmarks run it as a process: `python tests/fake_llm.py --latency 0.05` prints
`PORT <n>` once it is ready and serves until killed.

Faults: `fail_next` and `fail_when` fail chosen requests; `failure_rate` fails a seeded share
of them, drawn from `failure_statuses`, where besides HTTP statuses "hang" holds the request
past any client timeout (`hang_seconds`) and "malformed" answers 200 with a body that is not
a reply. `injected` counts every fault served, by kind.

Prompt cache: `cache_usage(kind, input_tokens) -> (cached, written)` sets the cache hits (and,
for Anthropic, cache writes) each reply reports, in each protocol's own usage fields.

Rate limit: `rate_limit(r, burst)` gives each API key a token bucket of `burst` requests
refilled at `r` a second; a request finding it empty is answered 429 at once, with the
`Retry-After` (fractional seconds) until its next token. `arrivals` keeps when each key's
requests came and `throttles` when each 429 was sent and the wait it asked for, so a test
can check that nobody sent during a wait. The process form takes `--rate`/`--burst` and
answers `GET /_stats` with its counters as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from llm_wire import ERROR_TEXT, PROTOCOLS, Conversation, Protocol

RootReply = str | Callable[[Conversation], str]

_MAP_REDUCE_REPLY = """\
I will split the context into chunks, ask a sub-model about each, and join the answers.
```repl
if isinstance(context, str):
    chunks = [context[i:i+4000] for i in range(0, len(context), 4000)]
else:
    chunks = list(context)
answers = parallel_query("Answer the question using this part of the text: {chunk}", chunks)
final_answer = "\\n".join(answers)
```
FINAL_VAR(final_answer)"""


def default_root_reply(messages: Conversation) -> str:
    """A one-iteration map-reduce over any context: one sub-call per chunk, answers joined."""
    return _MAP_REDUCE_REPLY


def default_sub_reply(prompt: str) -> str:
    """Deterministic, so tests can check which prompt got which answer, and in what order."""
    return f"[sub] {prompt}"[:200]


def estimate_tokens(text: str) -> int:
    return len(text.split())


@dataclass
class RecordedRequest:
    """One request the server received, as it understood it."""

    protocol: str  # "openai" | "anthropic" | "gemini"
    model: str
    kind: str  # "root" | "sub"
    messages: Conversation  # system prompt included, roles system/user/assistant
    prompt: str  # the last user message's text
    headers: dict[str, str]  # names lower-cased
    body: Any = None  # the JSON body as sent
    path: str = ""
    status: int = 200  # 0 for a request held past the client's timeout
    fault: str = ""  # the fault injected: "429", "500", "hang", "malformed", ... or ""


# Special entries of `failure_statuses` / `fail_next` besides HTTP statuses.
HANG = "hang"
MALFORMED = "malformed"
FaultStatus = int | str

# 200 answers a client cannot read: cut short, the wrong shape, a proxy's error page.
MALFORMED_BODIES = (
    '{"id": "chatcmpl-cut", "choices": [{"index": 0, "message": {"role": "assis',
    '{"object": "chat.completion", "note": "no choices, no content, no candidates"}',
    "<html><body><h1>502 Bad Gateway</h1></body></html>",
)


@dataclass
class _FailureRule:
    remaining: int
    status: FaultStatus
    retry_after: float | None
    kind: str
    body: str | None

    @property
    def fault(self) -> str:
        return str(self.status)


# -- the server -------------------------------------------------------------------------------


class FakeLLMServer:
    """The loopback server, its script of replies, the failures to inject and its records.

    Every attribute may be set at any time, from any thread; it applies to the next request.
    """

    def __init__(
        self,
        *,
        sub_latency: float = 0.0,
        root_latency: float = 0.0,
        required_key: str | None = None,
        seed: int = 0,
    ) -> None:
        self.sub_latency = sub_latency
        self.root_latency = root_latency
        self.required_key = required_key  # when set, other keys (or none) get a 401
        self.root_responder: Callable[[Conversation], str] | None = None
        self.sub_responder: Callable[[str], str] = default_sub_reply
        self.failure_rate = 0.0  # share of requests failing, drawn from a seeded random
        self.failure_statuses: list[FaultStatus] = [500, 503, 429]
        self.failure_kind = "sub"  # which requests `failure_rate` applies to: "sub" or "any"
        self.failure_retry_after: float | None = None  # Retry-After on the random 429s
        self.hang_seconds = 30.0  # how long a "hang" holds its request
        self.injected: Counter[str] = Counter()  # faults served, by kind
        self.record_requests = True  # the benchmark process turns this off to stay small
        self.requests: list[RecordedRequest] = []
        self.errors: list[str] = []  # tracebacks of responders that raised
        self.max_in_flight = 0
        self.in_flight = 0
        # Sub-calls in flight per workspace, for servers shared by several apps: the label
        # `workspace_of(prompt)` gives (None: not counted), and the peak of each label.
        self.workspace_of: Callable[[str], str | None] | None = None
        self.in_flight_by: Counter[str] = Counter()
        self.peak_by: Counter[str] = Counter()
        # Prompt-cache usage reported with each reply: (cached, written) input tokens of a
        # request of `kind` with this many input tokens; written only Anthropic reports.
        self.cache_usage: Callable[[str, int], tuple[int, int]] = lambda kind, tokens: (0, 0)
        self.url = ""
        self.port = 0
        self.rate: float | None = None  # token bucket per key, requests a second
        self.burst = 1.0
        self.arrivals: dict[str, list[float]] = {}  # key -> monotonic arrival times
        self.throttles: list[tuple[str, float, float]] = []  # (key, sent at, retry after)
        self.throttled = 0
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, as of)
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self._root_script: list[RootReply] = []
        self._fail_rules: list[_FailureRule] = []
        self._fail_when: list[tuple[Callable[[str], bool], int]] = []
        self._counts = {"root": 0, "sub": 0}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    @property
    def gemini_base_url(self) -> str:
        return self.url

    def start(self) -> FakeLLMServer:
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._serve, args=(ready, failure), name="fake-llm", daemon=True
        )
        self._thread.start()
        if not ready.wait(10) or failure:
            self._thread = None
            raise RuntimeError("the fake LLM server did not start") from (
                failure[0] if failure else None
            )
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=15)
        self._loop = self._thread = None

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._open())
        except BaseException as exc:
            failure.append(exc)
            ready.set()
            loop.close()
            return
        self._loop = loop
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._close())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _open(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._route("openai"))
        app.router.add_post("/v1/messages", self._route("anthropic"))
        # The SDK's default API version has moved between v1beta and v1; serve both.
        app.router.add_post("/{version:v1|v1beta}/models/{target}", self._gemini_route)
        app.router.add_get("/_stats", self._stats)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self.url = f"http://127.0.0.1:{self.port}"

    async def _close(self) -> None:
        # Requests still sleeping out a latency are cut short rather than waited for.
        current = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()

    # -- what tests set ------------------------------------------------------------------------

    def script_root(self, *replies: RootReply) -> None:
        """Queue replies for root calls, first in first out; a callable gets the conversation."""
        with self._lock:
            self._root_script.extend(replies)

    def fail_next(
        self,
        n: int,
        status: FaultStatus = 500,
        *,
        retry_after: float | None = None,
        kind: str = "sub",
        body: str | None = None,
    ) -> None:
        """Answer the next `n` requests of `kind` ("sub", "root" or "any") with `status`.

        `body=None` sends a realistic JSON error body for the protocol; otherwise `body` is
        sent as is, so `fail_next(1, 200, body="not json")` gives a malformed reply.
        `status` may also be "hang" or "malformed" (see the module docstring).
        """
        if kind not in ("sub", "root", "any"):
            raise ValueError(f"kind must be 'sub', 'root' or 'any', not {kind!r}")
        _check_status(status)
        with self._lock:
            self._fail_rules.append(_FailureRule(n, status, retry_after, kind, body))

    def fail_when(self, predicate: Callable[[str], bool], status: int = 500) -> None:
        """Every sub request whose prompt satisfies `predicate` fails with `status`, always."""
        with self._lock:
            self._fail_when.append((predicate, status))

    def rate_limit(self, rate: float | None, burst: float = 1.0) -> None:
        """Limit each key to `rate` requests a second, `burst` at once; None lifts the limit."""
        with self._lock:
            self.rate, self.burst = rate, burst
            self._buckets.clear()

    def reset_stats(self) -> None:
        with self._lock:
            self.arrivals.clear()
            self.throttles.clear()
            self.throttled = 0
            self.requests.clear()
            self._counts = {"root": 0, "sub": 0}
            self.max_in_flight = self.in_flight
            self.injected.clear()

    def count(self, kind: str = "sub") -> int:
        """Requests received of `kind` ("sub", "root" or "any"), failed ones included."""
        with self._lock:
            return sum(self._counts.values()) if kind == "any" else self._counts.get(kind, 0)

    # -- serving -------------------------------------------------------------------------------

    async def _stats(self, request: web.Request) -> web.Response:
        with self._lock:
            stats = {
                "sub": self._counts["sub"],
                "root": self._counts["root"],
                "throttled": self.throttled,
                "max_in_flight": self.max_in_flight,
            }
        return web.json_response(stats)

    def _take_token(self, key: str, now: float) -> float | None:
        """None if `key` may send now, else the seconds until it may; lock held."""
        if self.record_requests or self.rate is not None:
            self.arrivals.setdefault(key, []).append(now)
        if self.rate is None:
            return None
        tokens, as_of = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - as_of) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return None
        self._buckets[key] = (tokens, now)
        wait = (1.0 - tokens) / self.rate
        self.throttled += 1
        self.throttles.append((key, now, wait))
        return wait

    def _route(self, protocol: str) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._handle(request, PROTOCOLS[protocol], None)

        return handle

    async def _gemini_route(self, request: web.Request) -> web.StreamResponse:
        model, _, method = request.match_info["target"].rpartition(":")
        if method != "generateContent":
            raise web.HTTPNotFound(text=f"unsupported method {method!r}")
        return await self._handle(request, PROTOCOLS["gemini"], model)

    async def _handle(
        self, request: web.Request, protocol: Protocol, path_model: str | None
    ) -> web.StreamResponse:
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except ValueError:
            return web.json_response(
                protocol.error(400, "The body is not a JSON object."), status=400
            )
        model = path_model or str(body.get("model", ""))
        messages = protocol.messages(body)
        prompt = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        kind = "root" if model.startswith("root") else "sub"
        record = RecordedRequest(
            protocol.name, model, kind, messages, prompt, headers, body, request.path
        )

        key = protocol.key(headers) or ""
        with self._lock:
            self._counts[kind] += 1
            if self.record_requests:
                self.requests.append(record)
            wait = self._take_token(key, time.monotonic())
            label = None
            failure = self._failure_for(record, key) if wait is None else None
            if kind == "sub" and wait is None:
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                label = self.workspace_of(prompt) if self.workspace_of else None
                if label is not None:
                    self.in_flight_by[label] += 1
                    self.peak_by[label] = max(self.peak_by[label], self.in_flight_by[label])
        if wait is not None:
            # A rate limiter answers at once, before any work, with the wait it needs.
            record.status, record.fault = 429, "rate"
            return web.json_response(
                protocol.error(429, ERROR_TEXT[429]),
                status=429,
                headers={"Retry-After": f"{wait:.3f}"},
            )
        try:
            latency = self.root_latency if kind == "root" else self.sub_latency
            if latency > 0:
                await asyncio.sleep(latency)
            if failure is not None:
                with self._lock:
                    self.injected[failure.fault] += 1
                record.fault = failure.fault
                return await self._failure_response(protocol, failure, record)
            try:
                text = self._reply(kind, messages, prompt)
            except Exception:
                self.errors.append(traceback.format_exc())
                record.status = 500
                return web.json_response(
                    protocol.error(500, "The fake model's responder raised."), status=500
                )
            tokens_in = sum(estimate_tokens(m["content"]) for m in messages)
            cached, written = self.cache_usage(kind, tokens_in)
            reply = protocol.reply(model, text, tokens_in, estimate_tokens(text), cached, written)
            return web.json_response(reply)
        finally:
            if kind == "sub":
                with self._lock:
                    self.in_flight -= 1
                    if label is not None:
                        self.in_flight_by[label] -= 1

    def _failure_for(self, record: RecordedRequest, key: str | None) -> _FailureRule | None:
        """The failure this request gets, if any; called with the lock held."""
        if self.required_key is not None and key != self.required_key:
            return _FailureRule(1, 401, None, "any", None)
        for rule in self._fail_rules:
            if rule.remaining > 0 and rule.kind in ("any", record.kind):
                rule.remaining -= 1
                self._fail_rules = [r for r in self._fail_rules if r.remaining > 0]
                return rule
        if record.kind == "sub":
            for predicate, status in self._fail_when:
                if predicate(record.prompt):
                    return _FailureRule(1, status, None, "sub", None)
        if self.failure_kind not in ("any", record.kind):
            return None
        if self.failure_rate > 0 and self._random.random() < self.failure_rate:
            status = self._random.choice(self.failure_statuses)
            retry_after = self.failure_retry_after if status == 429 else None
            return _FailureRule(1, status, retry_after, record.kind, None)
        return None

    async def _failure_response(
        self, protocol: Protocol, failure: _FailureRule, record: RecordedRequest
    ) -> web.Response:
        if failure.status == HANG:
            record.status = 0
            await asyncio.sleep(self.hang_seconds)  # the client has given up long before
            return web.json_response(protocol.error(504, "Held too long."), status=504)
        if failure.status == MALFORMED:
            with self._lock:
                body = self._random.choice(MALFORMED_BODIES)
            return web.Response(status=200, text=body, content_type="application/json")
        assert isinstance(failure.status, int)
        record.status = failure.status
        headers = {}
        if failure.retry_after is not None:
            headers["Retry-After"] = f"{failure.retry_after:g}"
        if failure.body is not None:
            return web.Response(
                status=failure.status,
                text=failure.body,
                content_type="application/json",
                headers=headers,
            )
        message = ERROR_TEXT.get(failure.status, f"Injected failure with status {failure.status}.")
        return web.json_response(
            protocol.error(failure.status, message), status=failure.status, headers=headers
        )

    def _reply(self, kind: str, messages: Conversation, prompt: str) -> str:
        if kind == "sub":
            return self.sub_responder(prompt)
        with self._lock:
            scripted = self._root_script.pop(0) if self._root_script else None
        if isinstance(scripted, str):
            return scripted
        if scripted is not None:
            return scripted(messages)
        if self.root_responder is not None:
            return self.root_responder(messages)
        return default_root_reply(messages)


def _check_status(status: FaultStatus) -> None:
    if isinstance(status, str) and status not in (HANG, MALFORMED):
        raise ValueError(
            f"status must be an HTTP status, {HANG!r} or {MALFORMED!r}, not {status!r}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a fake LLM on 127.0.0.1.")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per sub call")
    parser.add_argument("--root-latency", type=float, default=0.0, help="seconds per root call")
    parser.add_argument(
        "--failure-rate", type=float, default=0.0, help="share of sub calls failing"
    )
    parser.add_argument("--rate", type=float, default=None, help="requests a second per key")
    parser.add_argument("--burst", type=float, default=1.0, help="token bucket size per key")
    args = parser.parse_args(argv)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    server = FakeLLMServer(sub_latency=args.latency, root_latency=args.root_latency)
    server.failure_rate = args.failure_rate
    server.record_requests = False
    server.rate_limit(args.rate, args.burst)
    with server:
        print(f"PORT {server.port}", flush=True)
        while not stopped.wait(0.5):
            pass


if __name__ == "__main__":
    main()
