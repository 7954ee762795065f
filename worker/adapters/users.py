"""Console users and API tokens in MongoDB (`users`, `api_tokens`); every read is by `_id`.

Password hashes come in already made (argon2 is slow on purpose, so callers run it off the event
loop); API tokens are kept as SHA-256 digests only, and shown once when made. A user's `stores`
is its scope (absent or null: a platform operator); a token's `stores` narrows its user's, and
its `expiresAt` (null: never) ends it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING, IndexModel
from pymongo.errors import DuplicateKeyError

from worker.adapters.dialect import Document
from worker.adapters.mongo import Database
from worker.domain.accounts import AccountError, NewToken, Role, digest, new_api_token, same_secret
from worker.domain.aliases import Clock
from worker.domain.scope import PLATFORM, Scope

TOUCH_EVERY = timedelta(minutes=1)
INDEXES = {
    "api_tokens": [IndexModel([("user", ASCENDING)], name="by_user")],
    "users": [IndexModel([("stores", ASCENDING)], name="by_store")],
}


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: Role
    password_hash: str
    created_at: datetime
    disabled: bool
    scope: Scope = PLATFORM


@dataclass(frozen=True, slots=True)
class ApiToken:
    token_id: str
    user: str
    label: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    stores: frozenset[str] | None = None  # None: its user's stores, whatever they are
    expires_at: datetime | None = None  # None: never

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def usable(self, now: datetime) -> bool:
        return self.active and (self.expires_at is None or now < self.expires_at)


def _user(doc: Document) -> User:
    return User(
        name=doc["_id"],
        role=Role(doc["role"]),
        password_hash=doc["passwordHash"],
        created_at=doc["createdAt"],
        disabled=bool(doc.get("disabled", False)),
        scope=Scope.of(doc.get("stores")),
    )


def _token(doc: Document) -> ApiToken:
    return ApiToken(
        token_id=doc["_id"],
        user=doc["user"],
        label=doc.get("label", ""),
        created_at=doc["createdAt"],
        last_used_at=doc.get("lastUsedAt"),
        revoked_at=doc.get("revokedAt"),
        stores=None if doc.get("stores") is None else frozenset(doc["stores"]),
        expires_at=doc.get("expiresAt"),
    )


class Users:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._users = db["users"]
        self._clock = clock

    async def add(self, name: str, role: Role, password_hash: str, scope: Scope) -> User:
        now = self._clock.now()
        doc = {
            "_id": name,
            "role": role.value,
            "stores": scope.listed(),
            "passwordHash": password_hash,
            "createdAt": now,
            "updatedAt": now,
            "disabled": False,
        }
        try:
            await self._users.insert_one(doc)
        except DuplicateKeyError:
            raise AccountError(f"a user named {name!r} exists already") from None
        return _user(doc)

    async def get(self, name: str) -> User | None:
        doc = await self._users.find_one({"_id": name})
        return _user(doc) if doc else None

    async def all(self, stores: list[str] | None = None) -> list[User]:
        """Every user, or (`stores` given) those with at least one of these stores."""
        query: Document = {} if stores is None else {"stores": {"$in": stores}}
        return [_user(doc) async for doc in self._users.find(query).sort("_id", ASCENDING)]

    async def update(self, name: str, **fields: Any) -> bool:
        """Set `passwordHash`, `role`, `stores` or `disabled`; False when there is no such user."""
        result = await self._users.update_one(
            {"_id": name}, {"$set": {**fields, "updatedAt": self._clock.now()}}
        )
        return result.matched_count == 1

    async def remove(self, name: str) -> bool:
        return (await self._users.delete_one({"_id": name})).deleted_count == 1


class ApiTokens:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._tokens = db["api_tokens"]
        self._clock = clock

    async def create(
        self,
        user: str,
        label: str,
        *,
        stores: frozenset[str] | None,
        lifetime: timedelta | None,
    ) -> tuple[NewToken, ApiToken]:
        token = new_api_token()
        now = self._clock.now()
        doc = {
            "_id": token.token_id,
            "hash": token.hash,
            "user": user,
            "label": label,
            "stores": None if stores is None else sorted(stores),
            "createdAt": now,
            "expiresAt": now + lifetime if lifetime else None,
            "lastUsedAt": None,
            "revokedAt": None,
        }
        await self._tokens.insert_one(doc)
        return token, _token(doc)

    async def authenticate(self, token_id: str, value: str) -> ApiToken | None:
        """The active, unexpired token whose id and digest both match, else None."""
        doc = await self._tokens.find_one({"_id": token_id})
        if doc is None or not same_secret(doc["hash"], digest(value)):
            return None
        token = _token(doc)
        now = self._clock.now()
        if not token.usable(now):
            return None
        if token.last_used_at is None or now - token.last_used_at > TOUCH_EVERY:
            await self._tokens.update_one({"_id": token_id}, {"$set": {"lastUsedAt": now}})
        return token

    async def get(self, token_id: str) -> ApiToken | None:
        doc = await self._tokens.find_one({"_id": token_id})
        return _token(doc) if doc else None

    async def revoke(self, token_id: str) -> bool:
        """True when an active token was revoked now."""
        result = await self._tokens.update_one(
            {"_id": token_id, "revokedAt": None}, {"$set": {"revokedAt": self._clock.now()}}
        )
        return result.modified_count == 1

    async def revoke_all(self, user: str) -> int:
        result = await self._tokens.update_many(
            {"user": user, "revokedAt": None}, {"$set": {"revokedAt": self._clock.now()}}
        )
        return result.modified_count

    async def of_users(self, users: list[str] | None) -> list[ApiToken]:
        """The tokens of these users (None: of every user), active ones first."""
        query = {} if users is None else {"user": {"$in": users}}
        tokens = [_token(doc) async for doc in self._tokens.find(query)]
        return sorted(tokens, key=lambda t: (t.revoked_at is not None, t.user, t.created_at))
