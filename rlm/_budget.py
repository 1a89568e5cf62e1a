"""A run's budgets, spent before the work: every sub-call reserves its share before it is sent.

Sizes are UTF-8 bytes, measured without building any prompt. A sub-call's input tokens are
estimated as one token per `BYTES_PER_TOKEN` bytes of its prompt, rounded up: about right for
English prose, low for code and for CJK text (3 bytes a character, often a token or more;
counting characters would run lower still). The estimate is reserved from the run's
`max_tokens`, and one sub-call from its `max_subcalls`, right before the call, inside the
limiter slot; when the call returns, the usage the provider reports replaces it. A failed
call gives its tokens back but keeps its sub-call: it was sent. So a run stops sending once
its budget is reserved, and overshoots it only by the output of the calls in flight and the
error of their estimates. Reservations are conservative: a call that does not fit while
others are in flight is refused, even if they end up using less than they reserved.

Money (`max_cost`, US dollars) is spent the same way: a sub-call reserves its estimated input
tokens at the sub model's uncached input price, and the cost of what the provider reports
(cached input priced as cached, see `rlm._pricing`) replaces it. A call to a model without a
price is counted as unpriced, and the run's cost is then unknown (None).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from rlm._pricing import Price

BYTES_PER_TOKEN = 4
PLACEHOLDER = "{chunk}"

USED_UP = "Error: the run's {limit} budget is used up; no more sub-calls."
TOO_LITTLE_LEFT = (
    "Error: the run's max_tokens budget has too little left for this prompt (about "
    "{needed:,} tokens needed, {left:,} left); send shorter prompts or answer with what you have."
)
TOO_LITTLE_MONEY = (
    "Error: the run's max_cost budget has too little left for this prompt (about "
    "${needed:.4f} needed, ${left:.4f} left); send shorter prompts or answer with what you have."
)
TOO_MANY_CHUNKS = (
    "parallel_query takes at most {limit:,} chunks per call (got {got:,}); "
    "split the work into several calls."
)
MAP_TOO_LARGE = (
    "parallel_query's prompts would add up to {got:,} bytes, over the {limit:,}-byte limit per "
    "call (each chunk is sent with the whole template); use fewer or smaller chunks per call, "
    "or a shorter template."
)
PROMPT_TOO_LARGE = (
    "llm_query takes a prompt of at most {limit:,} bytes (got {got:,}); send a shorter prompt, "
    "or split the text and map over the parts with parallel_query."
)


class RequestTooLarge(ValueError):
    """A request from the REPL is over a size limit; refused before any sub-call is made.

    The REPL host reports it into the model's code as a RuntimeError carrying this message.
    """

    def __init__(self, message: str, *, limit: int, got: int) -> None:
        super().__init__(message.format(limit=limit, got=got))
        self.limit = limit
        self.got = got


def utf8_size(text: str) -> int:
    """The length of `text` in UTF-8 bytes; ASCII text (the usual case) costs no copy."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def estimate_tokens(prompt_bytes: int) -> int:
    return -(-prompt_bytes // BYTES_PER_TOKEN)


class PromptTemplate:
    """A `parallel_query` template: each chunk's prompt, and its size without building it.

    `{chunk}` is replaced by plain replacement, other braces are left alone; a template
    without `{chunk}` gets the chunk appended after a blank line.
    """

    def __init__(self, template: str) -> None:
        self.template = template
        self.placeholders = template.count(PLACEHOLDER)
        size = utf8_size(template)
        if self.placeholders:
            self._fixed = size - self.placeholders * len(PLACEHOLDER)
        else:
            self._fixed = size + 2  # the blank line before the appended chunk

    def size(self, chunk: str) -> int:
        return self._fixed + max(1, self.placeholders) * utf8_size(chunk)

    def prompt(self, chunk: str) -> str:
        if self.placeholders:
            return self.template.replace(PLACEHOLDER, chunk)
        return f"{self.template}\n\n{chunk}"


def map_sizes(
    template: PromptTemplate, chunks: list[str], *, max_chunks: int, max_bytes: int
) -> list[int]:
    """Each chunk's prompt size; RequestTooLarge if the map is over a limit."""
    if len(chunks) > max_chunks:
        raise RequestTooLarge(TOO_MANY_CHUNKS, limit=max_chunks, got=len(chunks))
    sizes = [template.size(chunk) for chunk in chunks]
    total = sum(sizes)
    if total > max_bytes:
        raise RequestTooLarge(MAP_TOO_LARGE, limit=max_bytes, got=total)
    return sizes


def prompt_size(prompt: str, *, max_bytes: int) -> int:
    """One `llm_query` prompt's size; RequestTooLarge if it is over the limit."""
    size = utf8_size(prompt)
    if size > max_bytes:
        raise RequestTooLarge(PROMPT_TOO_LARGE, limit=max_bytes, got=size)
    return size


@dataclass(frozen=True)
class Spent:
    """What a run has spent so far; the difference of two is what was spent between them."""

    subcalls: int
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0
    cost_usd: float = 0.0  # of the priced calls
    unpriced_calls: int = 0  # calls to a model without a price: the cost is unknown

    @property
    def cost(self) -> float | None:
        """US dollars spent, or None if a call had no price."""
        return None if self.unpriced_calls else self.cost_usd

    def __sub__(self, other: Spent) -> Spent:
        return Spent(
            self.subcalls - other.subcalls,
            self.input_tokens - other.input_tokens,
            self.output_tokens - other.output_tokens,
            self.cached_input_tokens - other.cached_input_tokens,
            self.cost_usd - other.cost_usd,
            self.unpriced_calls - other.unpriced_calls,
        )


@dataclass
class Reservation:
    """What one sub-call holds of the run's budgets until it returns."""

    tokens: int
    cost: float = 0.0


class RunBudget:
    """What a run has spent and holds in reservations, against its limits (None: no limit)."""

    def __init__(
        self,
        *,
        max_subcalls: int | None = None,
        max_tokens: int | None = None,
        max_seconds: float | None = None,
        max_cost: float | None = None,
        sub_price: Price | None = None,
    ) -> None:
        self.max_subcalls = max_subcalls
        self.max_tokens = max_tokens
        self.max_seconds = max_seconds
        self.max_cost = max_cost
        self.sub_price = sub_price  # what a sub-call's reservation is priced at
        self.started = time.perf_counter()
        self.subcalls = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cached_input_tokens = 0
        self.reserved_tokens = 0
        self.cost_usd = 0.0
        self.reserved_cost = 0.0
        self.unpriced_calls = 0

    @property
    def cost(self) -> float | None:
        """US dollars spent so far, or None if a call had no price."""
        return None if self.unpriced_calls else self.cost_usd

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def spent(self) -> Spent:
        return Spent(
            self.subcalls,
            self.input_tokens,
            self.output_tokens,
            self.cached_input_tokens,
            self.cost_usd,
            self.unpriced_calls,
        )

    def limit_hit(self) -> str | None:
        """The name of the limit that is used up (reservations count as used), or None."""
        if self.max_subcalls is not None and self.subcalls >= self.max_subcalls:
            return "max_subcalls"
        if self.max_tokens is not None and self._committed() >= self.max_tokens:
            return "max_tokens"
        if self.max_seconds is not None and self.seconds >= self.max_seconds:
            return "max_seconds"
        if self.max_cost is not None and self._committed_cost() >= self.max_cost:
            return "max_cost"
        return None

    def refusal(self, prompt_bytes: int) -> str | None:
        """Why a sub-call with a prompt this size may not be sent now ("Error: ..."), or None."""
        limit = self.limit_hit()
        if limit is not None:
            return USED_UP.format(limit=limit)
        needed = estimate_tokens(prompt_bytes)
        if self.max_tokens is not None and self._committed() + needed > self.max_tokens:
            left = self.max_tokens - self._committed()
            return TOO_LITTLE_LEFT.format(needed=needed, left=left)
        cost = self._estimate_cost(needed)
        if self.max_cost is not None and self._committed_cost() + cost > self.max_cost:
            left_cost = self.max_cost - self._committed_cost()
            return TOO_LITTLE_MONEY.format(needed=cost, left=left_cost)
        return None

    def reserve(self, prompt_bytes: int) -> Reservation | str:
        """Take one sub-call and the prompt's estimated tokens, or say why not ("Error: ...")."""
        refusal = self.refusal(prompt_bytes)
        if refusal is not None:
            return refusal
        tokens = estimate_tokens(prompt_bytes)
        reservation = Reservation(tokens, self._estimate_cost(tokens))
        self.subcalls += 1
        self.reserved_tokens += reservation.tokens
        self.reserved_cost += reservation.cost
        return reservation

    def settle(
        self,
        reservation: Reservation,
        input_tokens: int,
        output_tokens: int,
        *,
        cached_input_tokens: int = 0,
        cache_write_tokens: int = 0,
        price: Price | None = None,
    ) -> int:
        """Replace the reservation by what the call used; returns the input tokens charged.

        A provider that reports no input tokens is charged the estimate: a budget must not
        stop counting because a server leaves usage out.
        """
        charged = input_tokens or reservation.tokens
        self.release(reservation)
        self.spend(
            charged,
            output_tokens,
            cached_input_tokens=cached_input_tokens,
            cache_write_tokens=cache_write_tokens,
            price=price,
        )
        return charged

    def release(self, reservation: Reservation) -> None:
        """Give a reservation back (the call failed or was cancelled); idempotent."""
        self.reserved_tokens -= reservation.tokens
        self.reserved_cost -= reservation.cost
        reservation.tokens, reservation.cost = 0, 0.0

    def spend(
        self,
        input_tokens: int,
        output_tokens: int,
        *,
        cached_input_tokens: int = 0,
        cache_write_tokens: int = 0,
        price: Price | None = None,
    ) -> None:
        """Count one call's tokens, and its cost at `price` (None: a model without a price)."""
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.cached_input_tokens += cached_input_tokens
        if price is None:
            self.unpriced_calls += 1
        else:
            self.cost_usd += price.cost(
                input_tokens, output_tokens, cached_input_tokens, cache_write_tokens
            )

    def _estimate_cost(self, tokens: int) -> float:
        return 0.0 if self.sub_price is None else self.sub_price.cost(tokens, 0)

    def _committed(self) -> int:
        return self.input_tokens + self.output_tokens + self.reserved_tokens

    def _committed_cost(self) -> float:
        return self.cost_usd + self.reserved_cost
