"""The door of /slack/events: a stranger's request costs a header check, not a parse.

`SlackRequestGate.admit(request)` turns an aiohttp request into a Bolt request only when
Slack signed it: the signature and its 5-minute timestamp window are checked on the raw bytes
(a constant-time HMAC, as slack_sdk's `SignatureVerifier` computes it) before anything is
parsed; a request without the headers, or with a timestamp outside the window, is refused
before its body is read. A signed body is then parsed as Bolt would parse it and its shape
checked (`bot.slack.payloads`), so an odd one is a 400, never a 500.

Every refusal is counted in `RequestStats` (by outcome, for /metrics) and logged at most once
per interval as one summary line; no body, no traceback.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from slack_bolt.request.async_request import AsyncBoltRequest

from bot.slack.payloads import problem

logger = logging.getLogger("bot.http")

WINDOW_SECONDS = 300  # Slack's: a signature older (or newer) than 5 minutes is refused
SUMMARY_INTERVAL = 60.0

UNSIGNED = "Unsigned request."
BAD_SIGNATURE = "Invalid signature."
STALE = "Request timestamp outside the 5-minute window."
MALFORMED = "Malformed request."
TOO_LARGE = "Request body too large."

# Outcomes, as counted and exported.
ACCEPTED = "accepted"
REFUSED = {
    "unsigned": 401,
    "bad_signature": 401,
    "stale": 401,
    "malformed": 400,
    "too_large": 413,
}
_TEXT = {
    "unsigned": UNSIGNED,
    "bad_signature": BAD_SIGNATURE,
    "stale": STALE,
    "too_large": TOO_LARGE,
}
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")


@dataclass
class RequestStats:
    """Requests to /slack/events by outcome since start (`counts`), and the refusals since
    the last log line: a refusal is logged at once when none was in the last `interval`
    seconds, otherwise summed up in the next line, so a flood writes one line a minute."""

    interval: float = SUMMARY_INTERVAL
    where: str = "/slack/events"
    counts: Counter[str] = field(default_factory=Counter)
    _pending: Counter[str] = field(default_factory=Counter)
    _logged_at: float = float("-inf")

    def accepted(self) -> None:
        self.counts[ACCEPTED] += 1

    def refused(self, outcome: str, detail: str = "") -> None:
        self.counts[outcome] += 1
        self._pending[outcome] += 1
        now = time.monotonic()
        if now - self._logged_at < self.interval:
            return
        if sum(self._pending.values()) == 1:  # a lone refusal, told with why
            logger.warning(
                "refused a request to %s: %s%s",
                self.where,
                outcome.replace("_", " "),
                f" ({detail})" if detail else "",
            )
            self._pending.clear()
            self._logged_at = now
        else:
            self.flush(now)

    def flush(self, now: float | None = None) -> None:
        """Write the summary of the refusals not yet logged, if any."""
        if not self._pending:
            return
        now = time.monotonic() if now is None else now
        parts = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in self._pending.most_common())
        logger.warning(
            "refused %d request(s) to %s in the last %.0f s: %s",
            sum(self._pending.values()),
            self.where,
            now - self._logged_at,
            parts,
        )
        self._pending.clear()
        self._logged_at = now


def refusal(outcome: str, request: web.Request | None = None) -> web.Response:
    """The response for a refused request. While part of its body is still to come, the
    connection is closed rather than drained, so an unread body is not read after all; a
    small body already in the buffer keeps its keep-alive connection."""
    response = web.Response(status=REFUSED[outcome], text=_TEXT.get(outcome, MALFORMED))
    if request is None or not request.content.is_eof():
        response.force_close()
    return response


@dataclass
class SlackRequestGate:
    signing_secret: str
    stats: RequestStats = field(default_factory=RequestStats)

    async def admit(self, request: web.Request) -> AsyncBoltRequest | web.Response:
        """The Bolt request for a signed, well-formed `request`; otherwise the refusal."""
        timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
        signature = request.headers.get("X-Slack-Signature", "")
        if not timestamp and not signature:
            return self._refuse(request, "unsigned")
        if not _TIMESTAMP.fullmatch(timestamp) or not _SIGNATURE.fullmatch(signature):
            return self._refuse(request, "bad_signature", "malformed signature headers")
        if abs(time.time() - int(timestamp)) > WINDOW_SECONDS:
            return self._refuse(request, "stale")
        raw = await request.read()  # capped by the application's client_max_size
        if not self._signed(raw, timestamp, signature):
            return self._refuse(request, "bad_signature")
        try:
            text = raw.decode("utf-8")
            body = _parse(text, request.content_type)
        except (ValueError, RecursionError):  # not UTF-8, not JSON, or nested past reason
            return self._refuse(request, "malformed", "not parseable")
        wrong = problem(body)
        if wrong:
            return self._refuse(request, "malformed", wrong)
        try:
            bolt_request = AsyncBoltRequest(
                body=text,
                query=request.query_string,
                headers=dict(request.headers),
            )
        except Exception as exc:  # whatever Bolt cannot build a context from: still a 400
            return self._refuse(request, "malformed", type(exc).__name__)
        self.stats.accepted()
        return bolt_request

    def _signed(self, raw: bytes, timestamp: str, signature: str) -> bool:
        base = b"v0:" + timestamp.encode() + b":" + raw
        digest = hmac.new(self.signing_secret.encode(), base, hashlib.sha256).hexdigest()
        return hmac.compare_digest(f"v0={digest}", signature)

    def _refuse(self, request: web.Request, outcome: str, detail: str = "") -> web.Response:
        self.stats.refused(outcome, detail)
        return refusal(outcome, request)


def _parse(text: str, content_type: str) -> Any:
    """The body as Bolt will parse it (`slack_bolt.request.internals.parse_body`), raising
    ValueError (or RecursionError) where Bolt would raise anything."""
    if not text:
        return {}
    if content_type == "application/json" or text.startswith("{"):
        return json.loads(text)
    form = dict(parse_qsl(text, keep_blank_values=True))
    if "payload" in text:  # Bolt's own test: an interaction's form holds one JSON field
        payload = form.get("payload")
        return {} if payload is None else json.loads(payload)
    return form
