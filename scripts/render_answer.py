"""Make docs/answer.png: a real answer in a thread, as the app posts it.

Runs the real app against the loopback Slack and LLM servers of the test suite (no network,
no keys), asks one question by mention, then renders the thread the loopback Slack holds,
with the Block Kit the app posted, to HTML and screenshots it with headless Chromium.

    python scripts/render_answer.py [--html-only]
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from bot_harness import BotHarness, harness_settings, mention  # noqa: E402
from fake_llm import FakeLLMServer  # noqa: E402
from slack_server import BOT_USER, SlackServer  # noqa: E402

OUT = ROOT / "docs" / "answer.png"
CHANNEL = [
    ("U2", "Launch checklist is up. We ship the mobile app on 4 March."),
    ("U1", "QA found a crash on Android 12 when the camera permission is denied."),
    ("U2", "Then we hold the launch until the fix is in: new date 14 March."),
    ("U1", "Fix merged. Release notes need the new date and the Android note."),
]
QUESTION = "when do we launch, and why did it move?"
ROOT_REPLY = """I will ask a sub-model about each message, then write the answer.
```repl
notes = parallel_query("What does this say about the launch date? {chunk}", context)
answer = (
    "*The launch is on 14 March* [m3]. It was planned for 4 March [m1], and moved because "
    "QA found a crash on Android 12 when the camera permission is denied [m2]; the fix is "
    "merged, and the release notes still need the new date [m4]."
)
```
FINAL_VAR(answer)"""
EMOJI = {":white_check_mark:": "✅", ":thumbsup:": "👍", ":thumbsdown:": "👎", ":x:": "❌"}
NAMES = {"U1": "Alice", "U2": "bob", BOT_USER: "rlm"}


def mrkdwn(text: str) -> str:
    """Slack mrkdwn to HTML: enough for what the app posts."""
    out = html.escape(html.unescape(text), quote=False)
    out = re.sub(r"&lt;(https?://[^|&]+)\|([^&]+)&gt;", r'<a href="\1">\2</a>', out)
    out = re.sub(r"&lt;(https?://[^&]+)&gt;", r'<a href="\1">\1</a>', out)
    out = re.sub(r"\*\*([^*]+)\*\*|\*([^*\n]+)\*", lambda m: f"<b>{m[1] or m[2]}</b>", out)
    out = re.sub(r"(?<![\w/])_([^_\n]+)_(?!\w)", r"<i>\1</i>", out)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\[(\[?[^\]]+\]?)\]\((https?://[^)]+)\)", r'<a href="\2">\1</a>', out)
    for code, emoji in EMOJI.items():
        out = out.replace(code, emoji)
    return out.replace("\n", "<br>")


def block_html(block: dict[str, Any]) -> str:
    kind = block.get("type")
    if kind in ("section", "markdown"):
        text = block.get("text")
        body = text.get("text", "") if isinstance(text, dict) else str(text or "")
        fields = "".join(f"<div>{mrkdwn(f.get('text', ''))}</div>" for f in block.get("fields", []))
        return f'<div class="section">{mrkdwn(body)}{fields}</div>'
    if kind == "context":
        parts = [mrkdwn(e.get("text", "")) for e in block.get("elements", []) if "text" in e]
        return f'<div class="context">{" · ".join(parts)}</div>'
    if kind == "actions":
        buttons = "".join(
            f'<span class="button">{mrkdwn(e.get("text", {}).get("text", ""))}</span>'
            for e in block.get("elements", [])
        )
        return f'<div class="actions">{buttons}</div>'
    if kind == "header":
        return f"<h3>{html.escape(block.get('text', {}).get('text', ''))}</h3>"
    if kind == "divider":
        return "<hr>"
    return f"<pre>{html.escape(json.dumps(block, indent=1))}</pre>"


def message_html(message: dict[str, Any]) -> str:
    who = NAMES.get(message.get("user", ""), message.get("user", ""))
    app = ' <span class="app">APP</span>' if message.get("user") == BOT_USER else ""
    blocks = message.get("blocks")
    body = "".join(block_html(b) for b in blocks) if blocks else mrkdwn(message["text"])
    return f'<div class="msg"><div class="who">{html.escape(who)}{app}</div>{body}</div>'


def thread_of(slack: SlackServer, ts: str) -> list[dict[str, Any]]:
    """The thread under `ts` as it stands: each app message with the blocks it last got."""
    messages = [m for m in slack.channels["C1"]["messages"] if ts in (m["ts"], m.get("thread_ts"))]
    posted = [m for m in slack.channels["C1"]["messages"] if m.get("user") == BOT_USER]
    for call, message in zip(slack.calls_to("chat.postMessage"), posted, strict=False):
        message["blocks"] = _blocks(call.params.get("blocks"))
    for call in slack.calls_to("chat.update"):
        for message in messages:
            if message["ts"] == call.params.get("ts"):
                message["blocks"] = _blocks(call.params.get("blocks"))
    return messages


def _blocks(value: Any) -> list[dict[str, Any]] | None:
    return json.loads(value) if isinstance(value, str) else value


PAGE = """<!doctype html><meta charset="utf-8"><style>
body {{ font: 15px/1.45 -apple-system, "Segoe UI", Lato, sans-serif; margin: 0; background: #fff;
  color: #1d1c1d; width: 720px; }}
.head {{ padding: 12px 20px; border-bottom: 1px solid #ddd; font-weight: 700; }}
.msg {{ padding: 8px 20px; }} .who {{ font-weight: 700; }}
.app {{ background: #eee; color: #555; font-size: 10px; padding: 1px 4px; border-radius: 3px; }}
.context {{ color: #616061; font-size: 13px; margin-top: 4px; }}
.button {{ display: inline-block; border: 1px solid #bbb; border-radius: 4px; padding: 3px 10px;
  margin: 6px 6px 0 0; font-size: 13px; font-weight: 700; }}
a {{ color: #1264a3; text-decoration: none; }} code {{ background: #f4f4f4; }}
.replies {{ margin-left: 20px; border-left: 3px solid #e8e8e8; }}
</style><div class="head">#general · thread</div>{parent}<div class="replies">{replies}</div>
"""


async def make_page(workdir: Path) -> str:
    with FakeLLMServer() as llm, SlackServer() as slack:
        slack.add_user("U1", "Alice")
        slack.add_user("U2", "Bob Jones", display_name="bob")
        slack.add_channel("C1", "general")
        for user, text in CHANNEL:
            slack.add_message("C1", text, user=user)
        llm.root_responder = lambda messages: ROOT_REPLY
        llm.sub_responder = lambda prompt: "noted"
        settings = harness_settings(
            slack_api_url=slack.api_url,
            openai_base_url=llm.openai_base_url,
            database_url=f"sqlite+aiosqlite:///{workdir / 'answer.db'}",
        )
        bot = await BotHarness(settings, response_base=slack.url).start()
        try:
            text = f"<@{BOT_USER}> {QUESTION}"
            ts = slack.add_message("C1", text, user="U1")
            assert bot.events is not None
            await bot.events.event(mention("C1", text, ts))
            await bot.settle()
            parent, *replies = thread_of(slack, ts)
        finally:
            await bot.close()
    parent["text"] = f"@rlm {QUESTION}"
    return PAGE.format(
        parent=message_html(parent), replies="".join(message_html(m) for m in replies)
    )


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        page = asyncio.run(make_page(work))
        (work / "answer.html").write_text(page, encoding="utf-8")
        if "--html-only" in sys.argv:
            print(page)
            return 0
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if chromium is None:
            print("chromium is not installed (apt-get install chromium)", file=sys.stderr)
            return 1
        subprocess.run(
            [
                chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", f"--user-data-dir={work / 'profile'}",
                f"--screenshot={OUT}", "--window-size=720,380", "--hide-scrollbars",
                (work / "answer.html").as_uri(),
            ],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
