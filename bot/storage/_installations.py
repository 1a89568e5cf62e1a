"""Slack OAuth installations and install states in the bot's own database, tokens encrypted.

`InstallationStore` implements slack_sdk's `AsyncInstallationStore` (what Bolt's OAuth flow
saves and its authorize looks up) on our SQLAlchemy engine and tables (migration 0006): every
token, refresh token and webhook URL is encrypted with `TokenCipher` before it is written and
decrypted only when read. One row is kept per (enterprise, team, user) and per bot; a new
install or a refreshed token replaces it. `StateStore` hands out install states and accepts
each once, before it expires; only a keyed hash of a state is stored.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from slack_sdk.oauth.installation_store import Bot, Installation
from slack_sdk.oauth.installation_store.async_installation_store import AsyncInstallationStore
from slack_sdk.oauth.state_store.async_state_store import AsyncOAuthStateStore
from sqlalchemy import ColumnElement, and_, delete, select, update

from bot.storage._crypto import TokenCipher
from bot.storage._models import OAuthState, SlackBot, SlackInstallation
from bot.storage._store import Store

logger = logging.getLogger("bot.installs")

_SECRET_FIELDS = ("bot_token", "bot_refresh_token", "user_token", "user_refresh_token")
_STORED_SECRETS = (
    (SlackInstallation, (*_SECRET_FIELDS, "incoming_webhook_url")),
    (SlackBot, ("bot_token", "bot_refresh_token")),
)

KEY_CANNOT_DECRYPT = (
    "RLM_ENCRYPTION_KEY cannot decrypt {bad} of the {total} token(s) stored in the database "
    "(workspaces {teams}): it is not the key they were written with; put that key back in "
    "RLM_ENCRYPTION_KEY (comma-separated, newest first), or reinstall those workspaces"
)


@dataclass(frozen=True, slots=True)
class KeyCheck:
    """How the stored secrets fare with the configured keys."""

    total: int  # stored secrets (tokens, refresh tokens, webhook URLs)
    workspaces: int  # installed workspaces (bot rows)
    unreadable: int  # secrets no key decrypts
    older_key: int  # secrets only an older key decrypts (`rlm-bot reencrypt` rewrites them)
    unreadable_teams: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.unreadable == 0

    def problem(self) -> str:
        teams = ", ".join(self.unreadable_teams[:5]) + (
            ", …" if len(self.unreadable_teams) > 5 else ""
        )
        return KEY_CANNOT_DECRYPT.format(bad=self.unreadable, total=self.total, teams=teams)


def _when(value: Any) -> datetime | None:
    """slack_sdk keeps times as epoch seconds; our columns hold aware datetimes."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(float(value), UTC)


def _epoch(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp())


def _scopes(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else ",".join(value)


class InstallationStore(AsyncInstallationStore):
    """Bolt's installation store on our database; see the module docstring."""

    def __init__(self, *, store: Store, client_id: str, cipher: TokenCipher) -> None:
        self.store = store
        self.client_id = client_id
        self.cipher = cipher

    @property
    def logger(self) -> logging.Logger:
        return logger

    def _owner(self, model: Any, enterprise_id: str | None, team_id: str | None) -> Any:
        return and_(
            model.client_id == self.client_id,
            model.enterprise_id == enterprise_id,
            model.team_id == team_id,
        )

    async def async_save(self, installation: Installation) -> None:
        i = installation
        team_id = None if i.is_enterprise_install else i.team_id
        row = SlackInstallation(
            client_id=self.client_id,
            app_id=i.app_id,
            enterprise_id=i.enterprise_id,
            enterprise_name=i.enterprise_name,
            enterprise_url=i.enterprise_url,
            team_id=team_id,
            team_name=i.team_name,
            bot_token=self.cipher.encrypt_optional(i.bot_token),
            bot_id=i.bot_id,
            bot_user_id=i.bot_user_id,
            bot_scopes=_scopes(i.bot_scopes),
            bot_refresh_token=self.cipher.encrypt_optional(i.bot_refresh_token),
            bot_token_expires_at=_when(i.bot_token_expires_at),
            user_id=i.user_id,
            user_token=self.cipher.encrypt_optional(i.user_token),
            user_scopes=_scopes(i.user_scopes),
            user_refresh_token=self.cipher.encrypt_optional(i.user_refresh_token),
            user_token_expires_at=_when(i.user_token_expires_at),
            incoming_webhook_url=self.cipher.encrypt_optional(i.incoming_webhook_url),
            incoming_webhook_channel=i.incoming_webhook_channel,
            incoming_webhook_channel_id=i.incoming_webhook_channel_id,
            incoming_webhook_configuration_url=i.incoming_webhook_configuration_url,
            is_enterprise_install=bool(i.is_enterprise_install),
            token_type=i.token_type,
            installed_at=_when(i.installed_at) or datetime.now(UTC),
        )
        async with self.store._writing() as session:
            await session.execute(
                delete(SlackInstallation).where(
                    self._owner(SlackInstallation, i.enterprise_id, team_id),
                    SlackInstallation.user_id == i.user_id,
                )
            )
            session.add(row)
        if i.bot_token is not None:
            await self.async_save_bot(i.to_bot())

    async def async_save_bot(self, bot: Bot) -> None:
        team_id = None if bot.is_enterprise_install else bot.team_id
        row = SlackBot(
            client_id=self.client_id,
            app_id=bot.app_id,
            enterprise_id=bot.enterprise_id,
            enterprise_name=bot.enterprise_name,
            team_id=team_id,
            team_name=bot.team_name,
            bot_token=self.cipher.encrypt(bot.bot_token),
            bot_id=bot.bot_id,
            bot_user_id=bot.bot_user_id,
            bot_scopes=_scopes(bot.bot_scopes),
            bot_refresh_token=self.cipher.encrypt_optional(bot.bot_refresh_token),
            bot_token_expires_at=_when(bot.bot_token_expires_at),
            is_enterprise_install=bool(bot.is_enterprise_install),
            installed_at=_when(bot.installed_at) or datetime.now(UTC),
        )
        async with self.store._writing() as session:
            await session.execute(
                delete(SlackBot).where(self._owner(SlackBot, bot.enterprise_id, team_id))
            )
            session.add(row)
            # A rotated bot token also replaces the one kept on the installation rows.
            await session.execute(
                update(SlackInstallation)
                .where(self._owner(SlackInstallation, bot.enterprise_id, team_id))
                .values(
                    bot_token=row.bot_token,
                    bot_refresh_token=row.bot_refresh_token,
                    bot_token_expires_at=row.bot_token_expires_at,
                )
            )

    async def async_find_bot(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        is_enterprise_install: bool | None = False,
    ) -> Bot | None:
        if is_enterprise_install:
            team_id = None
        async with self.store._read() as session:
            row = (
                await session.execute(
                    select(SlackBot).where(self._owner(SlackBot, enterprise_id, team_id)).limit(1)
                )
            ).scalar_one_or_none()
        if row is None:
            return None
        return Bot(
            app_id=row.app_id,
            enterprise_id=row.enterprise_id,
            enterprise_name=row.enterprise_name,
            team_id=row.team_id,
            team_name=row.team_name,
            bot_token=self.cipher.decrypt(row.bot_token),
            bot_id=row.bot_id or "",
            bot_user_id=row.bot_user_id or "",
            bot_scopes=row.bot_scopes or "",
            bot_refresh_token=self.cipher.decrypt_optional(row.bot_refresh_token),
            bot_token_expires_at=_epoch(row.bot_token_expires_at),
            is_enterprise_install=row.is_enterprise_install,
            installed_at=row.installed_at.timestamp(),
        )

    async def async_find_installation(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None = None,
        is_enterprise_install: bool | None = False,
    ) -> Installation | None:
        if is_enterprise_install:
            team_id = None
        where: ColumnElement[bool] = self._owner(SlackInstallation, enterprise_id, team_id)
        if user_id is not None:
            where = and_(where, SlackInstallation.user_id == user_id)
        query = (
            select(SlackInstallation)
            .where(where)
            .order_by(SlackInstallation.installed_at.desc())
            .limit(1)
        )
        async with self.store._read() as session:
            row = (await session.execute(query)).scalar_one_or_none()
        if row is None:
            return None
        c = self.cipher
        return Installation(
            app_id=row.app_id,
            enterprise_id=row.enterprise_id,
            enterprise_name=row.enterprise_name,
            enterprise_url=row.enterprise_url,
            team_id=row.team_id,
            team_name=row.team_name,
            bot_token=c.decrypt_optional(row.bot_token),
            bot_id=row.bot_id,
            bot_user_id=row.bot_user_id,
            bot_scopes=row.bot_scopes or "",
            bot_refresh_token=c.decrypt_optional(row.bot_refresh_token),
            bot_token_expires_at=_epoch(row.bot_token_expires_at),
            user_id=row.user_id,
            user_token=c.decrypt_optional(row.user_token),
            user_scopes=row.user_scopes or "",
            user_refresh_token=c.decrypt_optional(row.user_refresh_token),
            user_token_expires_at=_epoch(row.user_token_expires_at),
            incoming_webhook_url=c.decrypt_optional(row.incoming_webhook_url),
            incoming_webhook_channel=row.incoming_webhook_channel,
            incoming_webhook_channel_id=row.incoming_webhook_channel_id,
            incoming_webhook_configuration_url=row.incoming_webhook_configuration_url,
            is_enterprise_install=row.is_enterprise_install,
            token_type=row.token_type,
            installed_at=row.installed_at.timestamp(),
        )

    async def async_delete_bot(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        async with self.store._writing() as session:
            await session.execute(
                delete(SlackBot).where(self._owner(SlackBot, enterprise_id, team_id))
            )

    async def async_delete_installation(
        self, *, enterprise_id: str | None, team_id: str | None, user_id: str | None = None
    ) -> None:
        where: ColumnElement[bool] = self._owner(SlackInstallation, enterprise_id, team_id)
        if user_id is not None:
            where = and_(where, SlackInstallation.user_id == user_id)
        async with self.store._writing() as session:
            await session.execute(delete(SlackInstallation).where(where))

    async def async_delete_all(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        await self.async_delete_bot(enterprise_id=enterprise_id, team_id=team_id)
        await self.async_delete_installation(enterprise_id=enterprise_id, team_id=team_id)

    async def check_key(self) -> KeyCheck:
        """Try every stored secret with the configured keys (reads only; no secret leaves)."""
        total = unreadable = older = 0
        teams: set[str] = set()
        async with self.store._read() as session:
            workspaces = len((await session.execute(select(SlackBot.id))).all())
            for model, fields in _STORED_SECRETS:
                for row in (await session.execute(select(model))).scalars():
                    for name in fields:
                        value = getattr(row, name)
                        if value is None:
                            continue
                        total += 1
                        number = self.cipher.key_number(value)
                        if number is None:
                            unreadable += 1
                            teams.add(row.team_id or row.enterprise_id or "?")
                        elif number > 1:
                            older += 1
        return KeyCheck(total, workspaces, unreadable, older, tuple(sorted(teams)))

    async def reencrypt(self) -> int:
        """Write every stored secret again with the newest key; returns how many were."""
        count = 0
        async with self.store._writing() as session:
            for model, fields in _STORED_SECRETS:
                for row in (await session.execute(select(model))).scalars():
                    for name in fields:
                        value = getattr(row, name)
                        if value is not None:
                            setattr(row, name, self.cipher.rotate(value))
                            count += 1
        return count


class StateStore(AsyncOAuthStateStore):
    """Install states: random, signed with SLACK_STATE_SECRET, stored as a keyed hash, used
    once, and refused after `expiration_seconds`."""

    def __init__(self, *, store: Store, secret: str, expiration_seconds: int = 600) -> None:
        self.store = store
        self._key = secret.encode()
        self.expiration_seconds = expiration_seconds

    @property
    def logger(self) -> logging.Logger:
        return logger

    def _sign(self, nonce: str) -> str:
        return hmac.new(self._key, b"state:" + nonce.encode(), hashlib.sha256).hexdigest()[:32]

    def _hash(self, state: str) -> str:
        return hmac.new(self._key, b"stored:" + state.encode(), hashlib.sha256).hexdigest()

    async def async_issue(self, *args: Any, **kwargs: Any) -> str:
        nonce = secrets.token_urlsafe(24)
        state = f"{nonce}.{self._sign(nonce)}"
        now = datetime.now(UTC)
        async with self.store._writing() as session:
            await session.execute(delete(OAuthState).where(OAuthState.expire_at < now))
            session.add(
                OAuthState(
                    state_hash=self._hash(state),
                    expire_at=now + timedelta(seconds=self.expiration_seconds),
                )
            )
        return state

    async def async_consume(self, state: str) -> bool:
        nonce, _, signature = state.partition(".")
        if not nonce or len(state) > 200 or not hmac.compare_digest(signature, self._sign(nonce)):
            logger.info("refused an install state that this app did not issue")
            return False
        async with self.store._writing() as session:
            deleted = await session.execute(
                delete(OAuthState)
                .where(OAuthState.state_hash == self._hash(state))
                .returning(OAuthState.expire_at)
            )
            expire_at = deleted.scalar_one_or_none()
        if expire_at is None:
            logger.info("refused an install state already used or never stored")
            return False
        if expire_at < datetime.now(UTC):
            logger.info("refused an expired install state")
            return False
        return True
