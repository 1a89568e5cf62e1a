"""What a call costs in money: a price table per `provider:model` and the arithmetic.

Prices are US dollars per million tokens: input, cached input (a provider's prompt-cache
hits), output, and for Anthropic the cache writes (`cache_creation_input_tokens`, billed
above the input price). A model the table does not hold costs "unknown" (None), never 0:
a run over an unpriced model reports no cost rather than a wrong one.

Token counts follow `Completion`: `input_tokens` is every input token of the call, cached
ones and cache writes included, so the uncached part is what is left of it.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlm._exceptions import ConfigurationError

PER_MILLION = 1_000_000

BAD_PRICES = (
    "The price table could not be read ({why}): give an object of "
    '"provider:model": {{"input": 2.5, "cached_input": 1.25, "output": 10}} '
    "in US dollars per million tokens."
)


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens."""

    input: float
    cached_input: float
    output: float
    cache_write: float | None = None  # None: cache writes cost the input price

    def cost(
        self,
        input_tokens: int,
        output_tokens: int,
        cached_input_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> float:
        """The dollars one call cost; cached input priced as cached, cache writes as writes."""
        cached = min(cached_input_tokens, input_tokens)
        written = min(cache_write_tokens, input_tokens - cached)
        plain = input_tokens - cached - written
        write = self.input if self.cache_write is None else self.cache_write
        return (
            plain * self.input
            + cached * self.cached_input
            + written * write
            + output_tokens * self.output
        ) / PER_MILLION


Prices = Mapping[str, Price]

# List prices, standard (not batch) tier, prompts under any long-context surcharge, as
# published on 2025-11 by the providers: platform.openai.com/docs/pricing,
# docs.anthropic.com/en/docs/about-claude/pricing ("Cache Hits & Refreshes" is the cached
# price, "5m Cache Writes" the cache write), ai.google.dev/gemini-api/docs/pricing (Gemini
# 2.5 Pro's price for prompts up to 200k tokens; longer prompts cost more and are under-
# counted here). Operators override or extend it (RLM(prices=...), RLM_PRICES_FILE).
DEFAULT_PRICES: dict[str, Price] = {
    "openai:gpt-4o": Price(2.50, 1.25, 10.00),
    "openai:gpt-4o-mini": Price(0.15, 0.075, 0.60),
    "openai:gpt-4.1": Price(2.00, 0.50, 8.00),
    "openai:gpt-4.1-mini": Price(0.40, 0.10, 1.60),
    "openai:gpt-4.1-nano": Price(0.10, 0.025, 0.40),
    "openai:gpt-5": Price(1.25, 0.125, 10.00),
    "openai:gpt-5-mini": Price(0.25, 0.025, 2.00),
    "openai:gpt-5-nano": Price(0.05, 0.005, 0.40),
    "anthropic:claude-opus-4-1": Price(15.00, 1.50, 75.00, cache_write=18.75),
    "anthropic:claude-opus-4-5": Price(5.00, 0.50, 25.00, cache_write=6.25),
    "anthropic:claude-sonnet-4-0": Price(3.00, 0.30, 15.00, cache_write=3.75),
    "anthropic:claude-sonnet-4-5": Price(3.00, 0.30, 15.00, cache_write=3.75),
    "anthropic:claude-haiku-4-5": Price(1.00, 0.10, 5.00, cache_write=1.25),
    "anthropic:claude-3-5-haiku-latest": Price(0.80, 0.08, 4.00, cache_write=1.00),
    "gemini:gemini-2.5-pro": Price(1.25, 0.125, 10.00),
    "gemini:gemini-2.5-flash": Price(0.30, 0.03, 2.50),
    "gemini:gemini-2.5-flash-lite": Price(0.10, 0.01, 0.40),
    "gemini:gemini-2.0-flash": Price(0.10, 0.025, 0.40),
}

# Dated snapshots and aliases cost what their model costs: gpt-4o-2024-08-06,
# claude-sonnet-4-5-20250929, claude-sonnet-4-20250514, models/gemini-2.5-flash.
_SNAPSHOT = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8}|latest)$")
_ALIASES = {"anthropic:claude-sonnet-4": "anthropic:claude-sonnet-4-0"}


def price_for(spec: str, prices: Prices | None = None) -> Price | None:
    """The price of `provider:model` in `prices` (default: the shipped table), or None."""
    table = DEFAULT_PRICES if prices is None else prices
    provider, _, model = spec.partition(":")
    model = model.removeprefix("models/")
    for name in (f"{provider}:{model}", f"{provider}:{_SNAPSHOT.sub('', model)}"):
        name = _ALIASES.get(name, name)
        if name in table:
            return table[name]
    return None


def with_overrides(overrides: Mapping[str, Price] | None) -> dict[str, Price]:
    """The shipped table with `overrides` laid over it (a spec there replaces the shipped)."""
    return {**DEFAULT_PRICES, **(overrides or {})}


def parse_prices(data: object) -> dict[str, Price]:
    """A table from parsed JSON/TOML: {"provider:model": {"input", "cached_input", "output",
    optional "cache_write"}}; `cached_input` defaults to `input`. ConfigurationError if not."""
    if not isinstance(data, Mapping):
        raise ConfigurationError(BAD_PRICES.format(why="not an object"))
    table: dict[str, Price] = {}
    for spec, entry in data.items():
        if not isinstance(spec, str) or ":" not in spec:
            raise ConfigurationError(BAD_PRICES.format(why=f"{spec!r} is not provider:model"))
        table[spec] = _price(spec, entry)
    return table


def _price(spec: str, entry: Any) -> Price:
    if not isinstance(entry, Mapping):
        raise ConfigurationError(BAD_PRICES.format(why=f"{spec}: not an object"))
    unknown = set(entry) - {"input", "cached_input", "output", "cache_write"}
    if unknown:
        raise ConfigurationError(
            BAD_PRICES.format(why=f"{spec}: unknown field {sorted(unknown)[0]!r}")
        )
    values: dict[str, float] = {}
    for field in ("input", "cached_input", "output", "cache_write"):
        value = entry.get(field)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigurationError(
                BAD_PRICES.format(why=f"{spec}: {field} is not a price of 0 or more")
            )
        values[field] = float(value)
    if "input" not in values or "output" not in values:
        raise ConfigurationError(BAD_PRICES.format(why=f"{spec}: input and output are needed"))
    return Price(
        values["input"],
        values.get("cached_input", values["input"]),
        values["output"],
        values.get("cache_write"),
    )


def load_prices(text: str, *, toml: bool = False) -> dict[str, Price]:
    """A table from JSON text (or TOML with `toml=True`)."""
    try:
        data = tomllib.loads(text) if toml else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(BAD_PRICES.format(why=str(exc).splitlines()[0])) from exc
    return parse_prices(data)


def load_prices_file(path: str | Path) -> dict[str, Price]:
    """A table from a `.json` or `.toml` file."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(BAD_PRICES.format(why=f"{file}: {exc.strerror}")) from exc
    return load_prices(text, toml=file.suffix.lower() == ".toml")


def format_cost(cost: float | None) -> str:
    """$0.0123 / $1.23 / "unknown": small sums keep four places, larger ones two."""
    if cost is None:
        return "unknown"
    return f"${cost:,.4f}" if cost < 1 else f"${cost:,.2f}"
