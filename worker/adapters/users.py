"""Console users and API tokens in MongoDB (`users`, `api_tokens`); every read is by `_id`.

Password hashes come in already made (argon2 is slow on purpose, so callers run it off the event
loop); API tokens are kept as SHA-256 digests only, and shown once when made.
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

TOUCH_EVERY = timedelta(minutes=1)
INDEXES = {"api_tokens": [IndexModel([("user", ASCENDING)], name="by_user")]}


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: Role
    password_hash: str
    created_at: datetime
    disabled: bool


@dataclass(frozen=True, slots=True)
class ApiToken:
    token_id: str
    user: str
    label: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _user(doc: Document) -> User:
    return User(
        name=doc["_id"],
        role=Role(doc["role"]),
        password_hash=doc["passwordHash"],
        created_at=doc["createdAt"],
        disabled=bool(doc.get("disabled", False)),
    )


def _token(doc: Document) -> ApiToken:
    return ApiToken(
        token_id=doc["_id"],
        user=doc["user"],
        label=doc.get("label", ""),
        created_at=doc["createdAt"],
        last_used_at=doc.get("lastUsedAt"),
        revoked_at=doc.get("revokedAt"),
    )


class Users:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._users = db["users"]
        self._clock = clock

    async def add(self, name: str, role: Role, password_hash: str) -> User:
        now = self._clock.now()
        doc = {
            "_id": name,
            "role": role.value,
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

    async def all(self) -> list[User]:
        return [_user(doc) async for doc in self._users.find({}).sort("_id", ASCENDING)]

    async def update(self, name: str, **fields: Any) -> bool:
        """Set `passwordHash`, `role` or `disabled`; False when there is no such user."""
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

    async def create(self, user: str, label: str) -> tuple[NewToken, ApiToken]:
        token = new_api_token()
        doc = {
            "_id": token.token_id,
            "hash": token.hash,
            "user": user,
            "label": label,
            "createdAt": self._clock.now(),
            "lastUsedAt": None,
            "revokedAt": None,
        }
        await self._tokens.insert_one(doc)
        return token, _token(doc)

    async def authenticate(self, token_id: str, value: str) -> ApiToken | None:
        """The active token whose id and digest both match, else None."""
        doc = await self._tokens.find_one({"_id": token_id})
        if doc is None or not same_secret(doc["hash"], digest(value)):
            return None
        token = _token(doc)
        if not token.active:
            return None
        now = self._clock.now()
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

    async def all(self) -> list[ApiToken]:
        tokens = [_token(doc) async for doc in self._tokens.find({})]
        return sorted(tokens, key=lambda t: (t.revoked_at is not None, t.user, t.created_at))
