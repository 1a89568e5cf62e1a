"""The process's Prometheus metrics: module-level objects any room counts through in one line.

They live in one registry of our own (`REGISTRY`), made once per process at import, so tests
that build many apps in one process share it without duplicate registrations; tests read
differences. `bot.ops.metrics` serves it at /metrics. The provider limiters of the engine are
read at scrape time (`ProviderCollector`): rlm knows nothing of Prometheus.

Labels stay few: a workspace id is the widest (`team_id`); methods and providers are bounded
sets; nothing a person wrote ever becomes a label.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "ACK_SECONDS",
    "REGISTRY",
    "REJECTED",
    "REQUESTS",
    "RUNS",
    "RUNS_IN_FLIGHT",
    "RUNS_QUEUED",
    "SLACK_CALLS",
    "SLACK_RATE_LIMITED",
    "SUBCALLS",
    "TOKENS",
    "ProviderCollector",
    "request_outcome",
]

# A `_created` twin of every counter doubles the page and tells on-call nothing.
disable_created_metrics()
REGISTRY = CollectorRegistry(auto_describe=True)

# Requests Slack (or anyone) sent to /slack/events, by outcome, counted once per request
# from the status it was answered with (bot.ops.metrics' middleware): see `request_outcome`.
REQUESTS = Counter(
    "rlm_slack_requests",
    "Requests to /slack/events by outcome (ok, unauthorized, bad_request, too_large, error).",
    ["outcome"],
    registry=REGISTRY,
)
# Why a request was refused, finer than its status: the request path counts its own reasons
# here (e.g. REJECTED.labels(reason="bad_signature").inc()); REQUESTS still counts it once.
REJECTED = Counter(
    "rlm_slack_requests_rejected",
    "Requests to /slack/events refused before they were handled, by reason.",
    ["reason"],
    registry=REGISTRY,
)
# Slack gives up on a request not answered within 3 s and retries it.
ACK_SECONDS = Histogram(
    "rlm_slack_ack_seconds",
    "Seconds from a request's arrival at /slack/events to its answer (the ack).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0),
    registry=REGISTRY,
)
RUNS = Counter(
    "rlm_runs",
    "Runs ended on this replica, by the status they ended in.",
    ["status"],
    registry=REGISTRY,
)
RUNS_IN_FLIGHT = Gauge(
    "rlm_runs_in_flight",
    "Runs this replica is running now (gathering, thinking or answering), per workspace.",
    ["team_id"],
    registry=REGISTRY,
)
RUNS_QUEUED = Gauge(
    "rlm_runs_queued",
    "Runs waiting in this process for their workspace's run cap, per workspace.",
    ["team_id"],
    registry=REGISTRY,
)
SUBCALLS = Counter(
    "rlm_subcalls",
    "Sub-calls ended, by provider and outcome (ok, failed, refused by a budget).",
    ["provider", "outcome"],
    registry=REGISTRY,
)
TOKENS = Counter(
    "rlm_tokens",
    "Model tokens used by runs (root and sub-calls), per workspace and direction.",
    ["team_id", "direction"],
    registry=REGISTRY,
)
SLACK_CALLS = Counter(
    "rlm_slack_api_calls",
    "Slack Web API answers received (each attempt, retries included), by method.",
    ["method"],
    registry=REGISTRY,
)
SLACK_RATE_LIMITED = Counter(
    "rlm_slack_api_rate_limited",
    "Slack Web API answers that were 429 (rate limited), by method.",
    ["method"],
    registry=REGISTRY,
)

_OUTCOMES = {200: "ok", 400: "bad_request", 401: "unauthorized", 404: "not_found", 413: "too_large"}


def request_outcome(status: int) -> str:
    """The `REQUESTS` outcome for an HTTP status."""
    if status in _OUTCOMES:
        return _OUTCOMES[status]
    if 200 <= status < 300:
        return "ok"
    return "error" if status >= 500 else "other"


class ProviderCollector(Collector):
    """The engine's adaptive limiters (`rlm.provider_limits()`), read at each scrape: the
    width each provider key is allowed now, its ceiling, calls in flight and waiting, and
    the 429/503 answers it has seen."""

    def collect(self) -> Iterator[Metric]:
        from rlm import provider_limits  # at scrape time: importing rlm pulls in the SDKs

        labels = ["provider"]
        width = GaugeMetricFamily(
            "rlm_provider_width",
            "Sub-calls the provider key's adaptive limit lets fly now.",
            labels=labels,
        )
        ceiling = GaugeMetricFamily(
            "rlm_provider_ceiling", "The most the provider key's limit may grow to.", labels=labels
        )
        in_flight = GaugeMetricFamily(
            "rlm_provider_in_flight", "Calls in flight on the provider key.", labels=labels
        )
        waiting = GaugeMetricFamily(
            "rlm_provider_waiting", "Calls waiting for room on the provider key.", labels=labels
        )
        throttled = CounterMetricFamily(
            "rlm_provider_throttled",
            "Answers of the provider that said slow down (429, 503, 529), retried or not.",
            labels=labels,
        )
        for limit in provider_limits():
            value = [limit.name]
            width.add_metric(value, limit.width)
            ceiling.add_metric(value, limit.ceiling)
            in_flight.add_metric(value, limit.in_flight)
            waiting.add_metric(value, limit.waiting)
            throttled.add_metric(value, limit.throttled)
        yield from (width, ceiling, in_flight, waiting, throttled)


REGISTRY.register(ProviderCollector())
