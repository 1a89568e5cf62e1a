"""Encrypting the tokens an OAuth install leaves with us, at rest in the database.

`RLM_ENCRYPTION_KEY` holds Fernet keys (`Fernet.generate_key()`), comma-separated, newest
first: a value is written with the newest key and read with whichever key made it, so a new
key is rolled in by putting it first, running `TokenCipher.rotate` over the stored values
(`rlm-bot reencrypt`), then dropping the old key. No message here ever shows a key or a token.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

NO_KEY = (
    "RLM_ENCRYPTION_KEY is not set: OAuth installs keep workspace tokens encrypted; set it to "
    'a key from python -c "from cryptography.fernet import Fernet; '
    'print(Fernet.generate_key().decode())"'
)
BAD_KEY = (
    "RLM_ENCRYPTION_KEY key {n} is not a Fernet key (32 url-safe base64-encoded bytes, "
    "as Fernet.generate_key() makes); keys are comma-separated, newest first"
)
UNREADABLE = (
    "a stored token could not be decrypted with any key in RLM_ENCRYPTION_KEY; "
    "was a key it was written with removed?"
)


class TokenDecryptError(Exception):
    """A stored value was written with a key that is no longer configured (or was altered)."""


def parse_keys(value: str | None) -> list[Fernet]:
    """The Fernet keys in `value`, newest first; ValueError (one line, no key in it) if unusable."""
    parts = [p.strip() for p in (value or "").split(",") if p.strip()]
    if not parts:
        raise ValueError(NO_KEY)
    keys = []
    for n, part in enumerate(parts, start=1):
        try:
            keys.append(Fernet(part.encode()))
        except (ValueError, TypeError):
            raise ValueError(BAD_KEY.format(n=n)) from None
    return keys


def check_keys(value: str | None) -> None:
    """Raise ValueError with one line if `value` is not a usable key list."""
    parse_keys(value)


class TokenCipher:
    """Encrypts with the newest key, decrypts with any; values are text, safe in a column."""

    def __init__(self, keys: str) -> None:
        self._keys = parse_keys(keys)
        self._fernet = MultiFernet(self._keys)

    def key_number(self, value: str) -> int | None:
        """Which key (1: the newest) decrypts `value`; None when none does."""
        for n, key in enumerate(self._keys, start=1):
            try:
                key.decrypt(value.encode("ascii"))
            except (InvalidToken, UnicodeError):
                continue
            return n
        return None

    def encrypt(self, value: str) -> str:
        return self._fernet.encrypt(value.encode()).decode("ascii")

    def decrypt(self, value: str) -> str:
        try:
            return self._fernet.decrypt(value.encode("ascii")).decode()
        except (InvalidToken, UnicodeError):
            raise TokenDecryptError(UNREADABLE) from None

    def rotate(self, value: str) -> str:
        """`value` written again with the newest key (unchanged in meaning)."""
        try:
            return self._fernet.rotate(value.encode("ascii")).decode("ascii")
        except (InvalidToken, UnicodeError):
            raise TokenDecryptError(UNREADABLE) from None

    def encrypt_optional(self, value: str | None) -> str | None:
        return None if value is None else self.encrypt(value)

    def decrypt_optional(self, value: str | None) -> str | None:
        return None if value is None else self.decrypt(value)
