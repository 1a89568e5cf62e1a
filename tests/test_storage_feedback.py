"""The Store's records for a run's presence: scope, error kinds for admins, and feedback."""

from __future__ import annotations

import pytest

from bot.storage import Store


@pytest.fixture
async def store(tmp_path):
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'rlm.db'}")
    yield store
    await store.close()


async def new_run(store: Store, **kw) -> int:
    values = dict(
        team_id="T1", channel_id="C1", thread_ts="1.0", user_id="U1", question="q?",
        root_model="openai:r", sub_model="openai:s", trigger="command",
    )  # fmt: skip
    values.update(kw)
    return await store.create_run(**values)


async def test_runs_keep_their_scope_and_a_thread_lists_its_runs(store):
    first = await new_run(store, scope="thread", scope_ts="1.0")
    second = await new_run(store, scope="thread", scope_ts="1.0")
    await new_run(store, thread_ts="2.0", scope="channel")
    await new_run(store, team_id="T2", scope="channel")  # same thread ts, other workspace
    runs = await store.thread_runs("T1", "C1", "1.0")
    assert [r.id for r in runs] == [first, second]
    assert (runs[0].scope, runs[0].scope_ts) == ("thread", "1.0")
    with pytest.raises(ValueError, match="scope must be one of channel, thread; got 'dm'"):
        await new_run(store, scope="dm")


async def test_operator_problems_lists_only_what_an_operator_can_fix(store):
    ids = [await new_run(store) for _ in range(3)]
    for run_id, kind in zip(
        ids, ("operator:provider_auth", "user:provider", "operator:missing_scope"), strict=True
    ):
        await store.finish_run(
            run_id, status="failed", answer=None, error="x", iterations=0, subcalls=0,
            input_tokens=0, output_tokens=0, seconds=0.0, error_kind=kind,
        )  # fmt: skip
    problems = await store.operator_problems("T1")
    assert [(r.id, r.error_kind) for r in problems] == [
        (ids[2], "operator:missing_scope"),
        (ids[0], "operator:provider_auth"),
    ]
    assert await store.operator_problems("T2") == []


async def test_feedback_is_one_vote_per_user_and_bad_values_are_refused(store):
    run_id = await new_run(store)
    await store.set_feedback(run_id, "U1", "up")
    await store.set_feedback(run_id, "U2", "down")
    await store.set_feedback(run_id, "U2", "up")
    assert await store.feedback(run_id) == {"U1": "up", "U2": "up"}
    with pytest.raises(ValueError, match="feedback must be one of up, down; got 'meh'"):
        await store.set_feedback(run_id, "U1", "meh")
    with pytest.raises(LookupError, match="Run 999 does not exist"):
        await store.set_feedback(999, "U1", "up")
    assert await store.feedback(run_id) == {"U1": "up", "U2": "up"}
