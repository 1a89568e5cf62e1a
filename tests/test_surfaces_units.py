"""The surfaces' parts on their own: the store's queries for App Home, the pane and problems;
which files are judged non-text by name; file change markers and shares; the problems an
operator must fix; the App Home view within Slack's block limits; mrkdwn made inert."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.gather.files import FileRejected, extract_text, refused_by_name
from bot.gather.scope_files import file_refs
from bot.gather.uploads import file_changed, shared_in
from bot.listeners.home import home_view
from bot.runs.problems import operator_problem
from bot.slack import surface_messages
from bot.storage import Store
from rlm import AuthenticationError, BadResponseError, ProviderUnavailableError


@pytest.fixture
async def store(tmp_path: Path):
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}")
    yield store
    await store.close()


async def new_run(store: Store, **fields) -> int:
    values = dict(
        team_id="T1", channel_id="C1", thread_ts="1.0", user_id="U1", question="q",
        root_model="m", sub_model="m", trigger="command",
    )  # fmt: skip
    return await store.create_run(**(values | fields))


async def test_recent_runs_are_newest_first_and_filtered(store):
    first = await new_run(store, question="first")
    await new_run(store, question="other user", user_id="U2")
    await new_run(store, question="other channel", channel_id="C2")
    await new_run(store, question="other team", team_id="T2")
    last = await new_run(store, question="last")
    by_channel = await store.recent_runs("T1", channel_id="C1")
    assert [r.question for r in by_channel] == ["last", "other user", "first"]
    mine = await store.recent_runs("T1", user_id="U1", limit=2)
    assert [r.question for r in mine] == ["last", "other channel"]
    assert mine[0].id == last and first not in [r.id for r in mine]
    assert await store.recent_runs("T3") == []
    with pytest.raises(ValueError, match="`limit` must be between 1 and 50; got 0"):
        await store.recent_runs("T1", limit=0)


async def test_a_pane_context_is_saved_replaced_and_kept_apart(store):
    assert await store.pane_context("D1", "1.0") is None
    for viewed in ("C1", "C2"):
        await store.save_pane_context(
            channel_id="D1", thread_ts="1.0", team_id="T1", user_id="U1",
            viewed_channel_id=viewed, viewed_team_id="T1",
        )  # fmt: skip
    pane = await store.pane_context("D1", "1.0")
    assert (pane.viewed_channel_id, pane.team_id, pane.user_id) == ("C2", "T1", "U1")
    assert await store.pane_context("D1", "2.0") is None


async def test_problems_are_counted_per_kind_and_workspace_and_cleared(store):
    for _ in range(3):
        await store.record_problem("T1", kind="provider_auth:openai", detail="d", fix="f")
    await store.record_problem("T1", kind="slack_scope:files:read", detail="d2", fix="f2")
    await store.record_problem("T2", kind="provider_auth:openai", detail="other", fix="f")
    problems = await store.problems_for_workspace("T1")
    assert [(p.kind, p.count) for p in problems] == [
        ("slack_scope:files:read", 1),
        ("provider_auth:openai", 3),
    ]
    assert problems[1].first_seen <= problems[1].last_seen
    await store.clear_problem("T1", "provider_auth:openai")
    assert [p.kind for p in await store.problems_for_workspace("T1")] == ["slack_scope:files:read"]
    assert [p.detail for p in await store.problems_for_workspace("T2")] == ["other"]


async def test_a_files_change_marker_is_kept(store):
    await store.save_file(
        team_id="T1", channel_id="C1", file_id="F1", name="a.txt", mimetype=None, size=1,
        text="a", thread_ts=None, user_id=None, changed="1700000000",
    )  # fmt: skip
    [kept] = await store.channel_files("T1", "C1")
    assert kept.changed == "1700000000"


@pytest.mark.parametrize(
    "name, mimetype, refused",
    [
        ("photo.PNG", None, "image"),
        ("scan", "image/jpeg", "image"),
        ("call.m4a", "", "binary_kind"),
        ("clip", "video/mp4", "binary_kind"),
        ("old.xls", None, "old_spreadsheet"),
        ("sheet.xlsx", None, None),
        ("deck.pptx", "image/png", None),  # the name says Office: looked inside
        ("notes.txt", "text/plain", None),
        ("report.pdf", "application/pdf", None),
        ("README", None, None),
    ],
)
def test_types_refused_by_name_or_type_alone(name, mimetype, refused):
    refusal = refused_by_name(name, mimetype)
    assert (refusal.kind if refusal else None) == refused


def test_a_refusal_says_whether_it_is_an_image():
    with pytest.raises(FileRejected) as image:
        extract_text("a.png", None, b"\x89PNG", max_bytes=100)
    with pytest.raises(FileRejected) as empty:
        extract_text("a.txt", None, b"", max_bytes=100)
    assert image.value.image and image.value.kind == "image"
    assert not empty.value.image and empty.value.kind == "empty"


def test_change_markers_and_shares():
    assert file_changed({"id": "F1", "name": "a"}) is None  # a trimmed copy cannot tell
    assert file_changed({"id": "F1", "mimetype": "text/plain"}) == ""
    assert file_changed({"created": 1, "updated": 5}) == "5"
    assert file_changed({"created": 1, "edit_timestamp": 7}) == "7"
    file = {"shares": {"private": {"G1": [{"ts": "1.0"}]}}, "channels": ["C3"]}
    assert shared_in(file, "G1") and shared_in(file, "C3") and not shared_in(file, "C1")


def test_file_refs_are_newest_first_once_each_with_their_thread():
    messages = [
        {"ts": "1.0", "files": [{"id": "F1", "name": "a.txt"}]},
        {"ts": "3.0", "thread_ts": "2.0", "files": [{"id": "F2", "name": "b.txt"}, {"id": ""}]},
        {"ts": "4.0", "files": [{"id": "F1", "name": "a.txt"}]},
        {"ts": "5.0"},
    ]
    refs = file_refs(messages)
    assert [(r.file_id, r.thread_ts) for r in refs] == [("F1", "4.0"), ("F2", "2.0")]


def _slack_error(error: str, **extra) -> SlackApiError:
    response = AsyncSlackResponse(
        client=None, http_verb="POST", api_url="x", req_args={},
        data={"ok": False, "error": error, **extra}, headers={}, status_code=200,
    )  # fmt: skip
    return SlackApiError("refused", response)


def test_only_operator_fixable_errors_are_problems():
    auth = operator_problem(
        AuthenticationError("bad key", provider="anthropic", model="claude", status=401)
    )
    assert auth is not None and auth.kind == "provider_auth:anthropic"
    assert "`ANTHROPIC_API_KEY`" in auth.fix
    model = operator_problem(BadResponseError("no such model", provider="openai",
                                              model="gpt-9", status=404))  # fmt: skip
    assert model is not None and "gpt-9" in model.detail and "RLM_ROOT_MODEL" in model.fix
    scope = operator_problem(_slack_error("missing_scope", needed="reactions:write"))
    assert scope is not None and scope.kind == "slack_scope:reactions:write"
    assert operator_problem(ProviderUnavailableError("503", provider="openai")) is None
    assert operator_problem(BadResponseError("bad request", status=400)) is None
    assert operator_problem(_slack_error("not_in_channel")) is None
    assert len(operator_problem(BadResponseError("x", provider="p" * 80, status=404)).kind) <= 64


def test_the_home_view_fits_slacks_limits():
    runs = [surface_messages.run_line(question="q" * 5000, link="https://x/p1", status="failed",
            place="<#C1>", user_id=None, when=datetime(2026, 11, 30, tzinfo=UTC))] * 10  # fmt: skip
    view = home_view(usage="u" * 5000, runs=runs, problems=["p" * 4000])
    assert view["type"] == "home" and len(view["blocks"]) <= 100
    for block in view["blocks"]:
        if block["type"] == "section":
            assert 0 < len(block["text"]["text"]) <= 3000
    assert "q" * 79 + "…" in runs[0] and ":x: failed" in runs[0]


def test_user_text_is_made_inert_in_mrkdwn():
    line = surface_messages.run_line(
        question="<!channel> see <https://evil.example|this> | & more", link="https://ok/p1",
        status="finished", place="<#C1>", user_id="U1", when=datetime(2026, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    assert "<!channel>" not in line and "<https://evil" not in line
    assert line.startswith("• <https://ok/p1|&lt;!channel&gt; see &lt;https://evil.example¦this")


async def test_migration_0005_keeps_kept_files_across_upgrade_and_downgrade(tmp_path):
    import sqlite3

    from bot.storage._engine import create_engine
    from bot.storage._migrate import downgrade, upgrade

    path = tmp_path / "m.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        await upgrade(engine, "0001")
        with sqlite3.connect(path) as db:
            db.execute("INSERT INTO workspaces (team_id, created_at) VALUES ('T1', '2026-01-01')")
            db.execute(
                "INSERT INTO files (team_id, channel_id, file_id, name, size, text, created_at)"
                " VALUES ('T1', 'C1', 'F1', 'a.txt', 4, 'kept', '2026-01-01')"
            )
        await upgrade(engine, "0005")
        [kept] = await Store(engine).channel_files("T1", "C1")
        assert (kept.text, kept.changed) == ("kept", None)  # unknown: trusted until a change
        await downgrade(engine, "0001")
        with sqlite3.connect(path) as db:
            columns = [row[1] for row in db.execute("PRAGMA table_info(files)")]
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
            assert db.execute("SELECT text FROM files").fetchall() == [("kept",)]
        assert "changed" not in columns and not {"assistant_threads", "problems"} & tables
    finally:
        await engine.dispose()
