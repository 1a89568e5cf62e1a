"""Several `rlm-bot` processes on one PostgreSQL database and one Redis, for tests and the
load benchmark: a fresh uniquely named database (dropped afterwards), a Redis key prefix of
its own (its keys deleted afterwards), and replicas started, killed and stopped as processes.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bot_harness import SlackEvents
from slack_server import BOT_TOKEN, SIGNING_SECRET

RLM_BOT = str(Path(sys.executable).parent / "rlm-bot")
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"


class Unavailable(Exception):
    """PostgreSQL, Redis or a driver for them is missing; the message says which."""


async def create_database() -> str:
    """A new empty database on the machine's PostgreSQL; its SQLAlchemy URL."""
    try:
        import asyncpg
    except ImportError:
        raise Unavailable("asyncpg is not installed (pip install asyncpg)") from None
    name = f"rlm_replicas_{uuid.uuid4().hex[:12]}"
    try:
        admin = await asyncpg.connect(POSTGRES_ADMIN, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        raise Unavailable(f"no PostgreSQL at {POSTGRES_ADMIN} ({exc})") from None
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"


async def drop_database(url: str) -> None:
    import asyncpg

    name = url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(POSTGRES_ADMIN, timeout=5)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def redis_prefix() -> str:
    """A key prefix of its own, once Redis has answered."""
    try:
        from redis.asyncio import Redis
    except ImportError:
        raise Unavailable("redis-py is not installed (pip install 'rlm-slack[redis]')") from None
    client = Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except Exception as exc:
        raise Unavailable(f"no Redis at {REDIS_URL} ({exc})") from None
    finally:
        await client.aclose()
    return f"rlmtest-{uuid.uuid4().hex[:12]}"


async def delete_keys(prefix: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def redis_members(key: str) -> list[str]:
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS_URL)
    try:
        return [m.decode() for m in await client.zrange(key, 0, -1)]
    finally:
        await client.aclose()


@dataclass
class Replica:
    proc: asyncio.subprocess.Process
    log: list[str] = field(default_factory=list)
    port: int = 0
    replica_id: str = ""
    events: SlackEvents | None = None
    _reader: asyncio.Task[None] | None = None

    async def started(self) -> Replica:
        assert self.proc.stderr is not None
        async with asyncio.timeout(60):
            while not self.port:
                line = (await self.proc.stderr.readline()).decode()
                if not line:
                    raise AssertionError("rlm-bot exited:\n" + "".join(self.log))
                self.log.append(line)
                if found := re.search(r"replica (\S+) sharing limits", line):
                    self.replica_id = found.group(1)
                if found := re.search(r"listening on port (\d+)", line):
                    self.port = int(found.group(1))
        self._reader = asyncio.create_task(self._keep_reading())
        self.events = SlackEvents(f"http://127.0.0.1:{self.port}/slack/events")
        return self

    async def _keep_reading(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.log.append(line.decode())

    async def wait(self, seconds: float = 60) -> int:
        async with asyncio.timeout(seconds):
            code = await self.proc.wait()
        if self._reader is not None:
            await self._reader
        return code

    async def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.events is not None:
            await self.events.close()
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        await self.wait()


def replica_env(
    *, slack_api_url: str, llm_base_url: str, database_url: str, prefix: str, **extra: str
) -> dict[str, str]:
    """Only what a replica needs: nothing from the developer's environment leaks in."""
    env = {
        "PATH": "/usr/bin:/bin",
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack_api_url,
        "PORT": "0",
        "RLM_HTTP_HOST": "127.0.0.1",
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "RLM_REDIS_PREFIX": prefix,
        "RLM_ROOT_MODEL": "openai:root-model",
        "RLM_SUB_MODEL": "openai:sub-model",
        "OPENAI_API_KEY": "test-key",
        "OPENAI_BASE_URL": llm_base_url,
        "RLM_PROGRESS_INTERVAL": "0",
        "RLM_HISTORY_DAYS": "0",
    }
    env.update(extra)
    return env


async def start_replicas(n: int, env: dict[str, str], cwd: Path) -> list[Replica]:
    """`n` rlm-bot processes, started together, each once it listens."""
    replicas = []
    for _ in range(n):
        proc = await asyncio.create_subprocess_exec(
            RLM_BOT, cwd=cwd, env=env, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        replicas.append(Replica(proc))
    try:
        await asyncio.gather(*(r.started() for r in replicas))
    except BaseException:
        await stop_all(replicas)
        raise
    return replicas


async def stop_all(replicas: Sequence[Replica]) -> None:
    for replica in replicas:
        if replica.proc.returncode is None:
            replica.proc.kill()
        await replica.stop()
