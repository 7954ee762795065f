"""Console accounts: roles, passwords, API tokens and the login-throttling rule. Values only.

Passwords are hashed with Argon2id through argon2-cffi (its defaults follow RFC 9106's second
recommended profile). API tokens and session ids are 256-bit random secrets, so they are stored
as SHA-256 digests: a slow hash buys nothing against a secret nobody can guess, and a digest read
out of the database cannot be replayed as a credential.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_PASSWORD_CHARS: Final = 12
MAX_PASSWORD_CHARS: Final = 256
TOKEN_PREFIX: Final = "ct"  # noqa: S105 - a label that secret scanners can match, not a secret
_USER_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_TOKEN = re.compile(rf"{TOKEN_PREFIX}_([0-9a-f]{{12}})_([A-Za-z0-9_-]{{43}})")
_HASHER = PasswordHasher()


class AccountError(ValueError):
    """A name, password or token that cannot be used; the message says what to change."""


class Role(StrEnum):
    SUPPORT = "support"
    ADMIN = "admin"

    def allows(self, required: Role) -> bool:
        """Admins may do everything support staff may, and more."""
        return self is Role.ADMIN or required is Role.SUPPORT


def normalize_user_name(name: str) -> str:
    cleaned = name.strip().lower()
    if not _USER_NAME.fullmatch(cleaned):
        raise AccountError(
            "a user name is 1-64 characters: lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return cleaned


def check_new_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_CHARS:
        raise AccountError(f"the password needs at least {MIN_PASSWORD_CHARS} characters")
    if len(password) > MAX_PASSWORD_CHARS:
        raise AccountError(f"the password may have at most {MAX_PASSWORD_CHARS} characters")
    return password


def generate_password() -> str:
    """A password for a person to copy once: 144 random bits, 24 URL-safe characters."""
    return secrets.token_urlsafe(18)


def hash_password(password: str) -> str:
    """Argon2id, about 60 ms of one core and 64 MiB: run it off the event loop."""
    return _HASHER.hash(check_new_password(password))


@functools.cache
def _dummy_hash() -> str:
    # Verified against when the user does not exist, so that an unknown name costs as much time
    # as a wrong password and the timing of a refusal does not tell which names exist.
    return _HASHER.hash(secrets.token_urlsafe(16))


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Constant work whether or not the user exists (stored_hash None)."""
    try:
        return _HASHER.verify(stored_hash or _dummy_hash(), password) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    """True when the hash was made with weaker parameters than this build uses."""
    return _HASHER.check_needs_rehash(stored_hash)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_session_secret() -> str:
    return secrets.token_urlsafe(32)


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def same_secret(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))


@dataclass(frozen=True, slots=True)
class NewToken:
    """A freshly made API token: `value` is shown once, only `token_id` and `hash` are kept."""

    token_id: str
    value: str
    hash: str


def new_api_token() -> NewToken:
    token_id = secrets.token_hex(6)
    # 43 characters: token_urlsafe(32) never pads.
    value = f"{TOKEN_PREFIX}_{token_id}_{secrets.token_urlsafe(32)}"
    return NewToken(token_id, value, digest(value))


def parse_api_token(value: str) -> str | None:
    """The token id of a well-formed token, else None (the caller answers 401 either way)."""
    match = _TOKEN.fullmatch(value.strip())
    return match.group(1) if match else None


@dataclass(frozen=True, slots=True)
class LoginLimits:
    """How many failed sign-ins one user from one address, and one address for any user, may
    have within `window` before each further attempt waits, twice as long as the one before."""

    per_user: int
    per_address: int
    window: timedelta


# The first wait past the limit; each later failure doubles it, up to the whole window.
FIRST_BACKOFF: Final = timedelta(seconds=30)


def backoff(before: list[datetime], limit: int, window: timedelta, now: datetime) -> float:
    """Seconds this attempt must wait (0: it may check the password).

    `before` holds the failures, and the attempts still being checked, that came before this
    one: counting those in flight is what keeps parallel guesses to `limit` password checks.
    Within the limit an attempt is free; past it, the n-th extra one waits FIRST_BACKOFF * 2^n
    after the latest attempt before it, never longer than `window`.
    """
    recent = sorted(at for at in before if now - at < window)
    if len(recent) < limit:
        return 0.0
    extra = min(len(recent) - limit, 30)  # 2^30 * 30 s is far past any window: cap the power
    delay = min(FIRST_BACKOFF * 2**extra, window)
    wait = (recent[-1] + delay - now).total_seconds()
    return max(wait, 1.0) if wait > 0 else 0.0


_DURATION = re.compile(r"([1-9][0-9]{0,5})([dhms])")
_UNITS: Final = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
MAX_TOKEN_LIFETIME: Final = timedelta(days=3650)


def parse_duration(text: str) -> timedelta | None:
    """`90d`, `12h`, `30m`, `45s`, or `never` (None): how long a token lives."""
    cleaned = text.strip().lower()
    if cleaned == "never":
        return None
    match = _DURATION.fullmatch(cleaned)
    if match is None:
        raise AccountError(
            f"{text[:20]!r} is not a duration: a number and d, h, m or s (90d, 12h, 30m, 45s), "
            "or never"
        )
    lifetime = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    if lifetime > MAX_TOKEN_LIFETIME:
        raise AccountError("a token lives at most 3650 days; use `never` for no expiry")
    return lifetime
