"""The encrypted installation store, the one-use state store and the tenant rows, on a real
SQLite file and on the machine's PostgreSQL (skipped, saying why, when it cannot be reached)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.fernet import Fernet
from slack_sdk.oauth.installation_store import Installation
from sqlalchemy import text

from bot.storage import Store
from bot.storage._crypto import TokenCipher, TokenDecryptError
from bot.storage._installations import InstallationStore, StateStore
from bot.storage._tenants import TenantStore

PG_ADMIN = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()


async def _pg_database() -> str:
    try:
        import asyncpg
    except ImportError:
        pytest.skip("PostgreSQL tests need asyncpg (pip install asyncpg)")
    name = f"rlm_i11_{uuid.uuid4().hex[:10]}"
    try:
        con = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test", timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not reachable: {exc}")
    try:
        await con.execute(f'CREATE DATABASE "{name}"')
    finally:
        await con.close()
    return name


async def _drop(name: str) -> None:
    import asyncpg

    con = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test", timeout=5)
    try:
        await con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await con.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request, tmp_path):
    if request.param == "sqlite":
        s = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'rlm.db'}")
        yield s
        await s.close()
        return
    name = await _pg_database()
    s = await Store.open(f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}")
    try:
        yield s
    finally:
        await s.close()
        await _drop(name)


def installation(team_id: str | None, token: str, **extra) -> Installation:
    return Installation(
        app_id="A1",
        enterprise_id=extra.pop("enterprise_id", None),
        team_id=team_id,
        bot_token=token,
        bot_id="B1",
        bot_user_id="UBOT",
        bot_scopes="chat:write,commands",
        user_id="UINSTALLER",
        **extra,
    )


async def all_text(store: Store) -> str:
    parts = []
    async with store._read() as session:
        for table in ("slack_installations", "slack_bots", "slack_oauth_states"):
            rows = (await session.execute(text(f"SELECT * FROM {table}"))).all()
            parts += [str(v) for row in rows for v in row]
    return "\n".join(parts)


async def test_installations_are_kept_encrypted_found_per_workspace_and_deleted(store):
    installs = InstallationStore(store=store, client_id="C1", cipher=TokenCipher(NEW))
    refresh = "xoxe-1-refresh-aaaaaaaaaaaaaaaaaaaaaaaa"
    long_token = "xoxe.xoxb-1-" + "z" * 180  # rotating tokens are long; so are their ciphers
    await installs.async_save(
        installation("TA", long_token, bot_refresh_token=refresh, bot_token_expires_in=3600)
    )
    await installs.async_save(installation("TB", "xoxb-team-b-secret"))
    await installs.async_save(
        installation(None, "xoxb-org-secret", enterprise_id="E1", is_enterprise_install=True)
    )
    stored = await all_text(store)
    assert "xox" not in stored and "z" * 20 not in stored

    a = await installs.async_find_installation(enterprise_id=None, team_id="TA")
    assert a.bot_token == long_token and a.bot_refresh_token == refresh
    assert a.bot_token_expires_at > datetime.now(UTC).timestamp()
    assert (await installs.async_find_bot(enterprise_id=None, team_id="TB")).bot_token == (
        "xoxb-team-b-secret"
    )
    org = await installs.async_find_bot(
        enterprise_id="E1", team_id="TE7", is_enterprise_install=True
    )
    assert org.bot_token == "xoxb-org-secret"
    assert await installs.async_find_bot(enterprise_id=None, team_id="TC") is None

    # Installing again replaces the row rather than piling up tokens.
    await installs.async_save(installation("TB", "xoxb-team-b-second"))
    async with store._read() as session:
        count = (await session.execute(text("SELECT count(*) FROM slack_bots"))).scalar()
    assert count == 3

    await installs.async_delete_all(enterprise_id=None, team_id="TA")
    assert await installs.async_find_installation(enterprise_id=None, team_id="TA") is None
    assert await installs.async_find_bot(enterprise_id=None, team_id="TA") is None
    assert await installs.async_find_bot(enterprise_id=None, team_id="TB") is not None


async def test_key_rotation_reads_old_values_and_reencrypts_with_the_newest(store):
    old = InstallationStore(store=store, client_id="C1", cipher=TokenCipher(OLD))
    await old.async_save(installation("TA", "xoxb-written-with-old"))
    both = InstallationStore(store=store, client_id="C1", cipher=TokenCipher(f"{NEW},{OLD}"))
    assert (await both.async_find_bot(enterprise_id=None, team_id="TA")).bot_token == (
        "xoxb-written-with-old"
    )
    assert await both.reencrypt() == 2  # the installation's token and the bot's
    new_only = InstallationStore(store=store, client_id="C1", cipher=TokenCipher(NEW))
    assert (await new_only.async_find_bot(enterprise_id=None, team_id="TA")).bot_token == (
        "xoxb-written-with-old"
    )
    with pytest.raises(TokenDecryptError) as caught:
        await old.async_find_bot(enterprise_id=None, team_id="TA")
    assert "xoxb" not in str(caught.value) and OLD not in str(caught.value)


async def test_states_are_used_once_refused_when_forged_or_expired(store):
    states = StateStore(store=store, secret="state-secret-123456", expiration_seconds=600)
    state = await states.async_issue()
    assert state not in await all_text(store)  # only a keyed hash is stored
    assert await states.async_consume(state) is True
    assert await states.async_consume(state) is False  # replayed
    other = StateStore(store=store, secret="another-secret-99999")
    assert await states.async_consume(await other.async_issue()) is False  # not ours
    assert await states.async_consume("no-dot-here") is False
    assert await states.async_consume("x" * 5000) is False
    short = StateStore(store=store, secret="state-secret-123456", expiration_seconds=0)
    late = await short.async_issue()
    await asyncio.sleep(0.01)
    assert await short.async_consume(late) is False


async def test_two_consumers_of_one_state_cannot_both_win(store):
    states = StateStore(store=store, secret="state-secret-123456")
    state = await states.async_issue()
    results = await asyncio.gather(*(states.async_consume(state) for _ in range(5)))
    assert sorted(results) == [False] * 4 + [True]


async def test_settings_rows_and_purges_are_per_workspace(store):
    tenants = TenantStore(store)
    await tenants.set_setting("TA", "max_parallel_calls", 3, user_id="UA")
    assert await tenants.settings("TA") == {"max_parallel_calls": 3}
    assert await tenants.settings("TB") == {}
    await tenants.set_setting("TA", "max_parallel_calls", None, user_id="UA")
    assert await tenants.settings("TA") == {}
    with pytest.raises(ValueError):
        await tenants.set_setting("TA", "team_id", "TB", user_id="UA")

    for team in ("TA", "TB", "TE1"):
        await store.create_run(
            team_id=team,
            channel_id="C" + team,
            thread_ts="1.0",
            user_id="U",
            question="q",
            root_model="openai:r",
            sub_model="openai:s",
            trigger="command",
        )
    await tenants.link_enterprise("TE1", "E1")
    soon = datetime.now(UTC) + timedelta(days=1)
    await tenants.record_uninstall("TA", is_enterprise=False, purge_after=soon)
    await tenants.record_uninstall("E1", is_enterprise=True, purge_after=soon)
    assert await tenants.due_uninstalls() == []
    due = await tenants.due_uninstalls(soon + timedelta(seconds=1))
    assert sorted(due) == [("E1", True), ("TA", False)]
    purged = await tenants.purge("E1", is_enterprise=True)
    assert purged.teams == ("TE1",) and purged.runs == 1
    assert (await tenants.purge("TA", is_enterprise=False)).runs == 1
    assert [r.team_id for r in await store.list_runs()] == ["TB"]
    await tenants.record_uninstall("TB", is_enterprise=False, purge_after=soon)
    await tenants.clear_uninstall("TB")  # reinstalled
    assert await tenants.due_uninstalls(soon + timedelta(days=1)) == []
