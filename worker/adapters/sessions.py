"""Browser sessions and failed logins in MongoDB (`sessions`, `login_failures`).

A session's cookie holds a random secret; the database holds its SHA-256 digest as `_id`, so the
lookup is one read by `_id` and a copy of the collection opens no session. A session ends at
logout, after `idle` without a request, or `max_age` after login, whichever comes first.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from pymongo import ASCENDING, IndexModel

from worker.adapters.dialect import Document
from worker.adapters.mongo import Database
from worker.domain.accounts import (
    LoginLimits,
    backoff,
    digest,
    new_csrf_token,
    new_session_secret,
)
from worker.domain.aliases import Clock

TOUCH_EVERY = timedelta(minutes=1)
INDEXES = {
    "sessions": [IndexModel([("user", ASCENDING)], name="by_user")],
    "login_failures": [IndexModel([("key", ASCENDING), ("at", ASCENDING)], name="by_key")],
}


@dataclass(frozen=True, slots=True)
class SessionRecord:
    session_id: str  # the digest, never the cookie's secret
    user: str
    csrf_token: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime


def _record(doc: Document) -> SessionRecord:
    return SessionRecord(
        session_id=doc["_id"],
        user=doc["user"],
        csrf_token=doc["csrf"],
        created_at=doc["createdAt"],
        last_seen_at=doc["lastSeenAt"],
        expires_at=doc["expiresAt"],
    )


class Sessions:
    def __init__(self, db: Database, *, idle: timedelta, max_age: timedelta, clock: Clock) -> None:
        self._sessions = db["sessions"]
        self._idle = idle
        self._max_age = max_age
        self._clock = clock

    async def start(self, user: str) -> tuple[str, SessionRecord]:
        """A new session with a new secret: never one a request brought (session fixation)."""
        secret = new_session_secret()
        now = self._clock.now()
        doc = {
            "_id": digest(secret),
            "user": user,
            "csrf": new_csrf_token(),
            "createdAt": now,
            "lastSeenAt": now,
            "expiresAt": now + self._max_age,
        }
        await self._sessions.insert_one(doc)
        return secret, _record(doc)

    async def find(self, secret: str) -> SessionRecord | None:
        """The live session for a cookie's secret; an expired one is deleted on sight."""
        doc = await self._sessions.find_one({"_id": digest(secret)})
        if doc is None:
            return None
        record = _record(doc)
        now = self._clock.now()
        if now >= record.expires_at or now - record.last_seen_at >= self._idle:
            await self._sessions.delete_one({"_id": record.session_id})
            return None
        if now - record.last_seen_at > TOUCH_EVERY:
            await self._sessions.update_one(
                {"_id": record.session_id}, {"$set": {"lastSeenAt": now}}
            )
        return record

    async def end(self, secret: str) -> None:
        await self._sessions.delete_one({"_id": digest(secret)})

    async def end_all(self, user: str, *, keep: str | None = None) -> int:
        """Log a user out everywhere (but the session `keep`, the digest of the one asking):
        after a password change, a role change or removal."""
        query: Document = {"user": user}
        if keep is not None:
            query["_id"] = {"$ne": keep}
        return (await self._sessions.delete_many(query)).deleted_count

    async def sweep(self) -> int:
        """Delete sessions past their absolute or idle expiry."""
        now = self._clock.now()
        result = await self._sessions.delete_many(
            {"$or": [{"expiresAt": {"$lte": now}}, {"lastSeenAt": {"$lte": now - self._idle}}]}
        )
        return result.deleted_count


@dataclass(frozen=True, slots=True)
class Attempt:
    """A sign-in attempt, counted before its password is checked: its two documents' ids."""

    user: str
    address: str
    ids: tuple[str, str]
    wait: float  # > 0: refused for this many seconds, check nothing


class LoginThrottle:
    """Attempts per user name and client address together, and per client address alone.

    Each attempt is inserted (an insert is atomic on every server) before its password is
    checked, and decides by the attempts before it in (at, id) order, those in flight included:
    so N parallel guesses make at most the allowed number of checks, where reading a count and
    then checking would let them all through. Keying the user by address as well means a flood
    of guesses from one address never locks the user out elsewhere; the address key bounds one
    address trying many names. A refused attempt is withdrawn, a failed one stays as a failure,
    a right password clears the user's failures from that address.
    """

    def __init__(self, db: Database, limits: LoginLimits, clock: Clock) -> None:
        self._failures = db["login_failures"]
        self._limits = limits
        self._clock = clock

    async def _before(self, key: str, at: datetime, mine: str) -> list[datetime]:
        since = at - self._limits.window
        docs = self._failures.find({"key": key, "at": {"$gt": since}}, {"at": 1})
        return [
            doc["at"]
            async for doc in docs
            if doc["_id"] != mine and (doc["at"], doc["_id"]) < (at, mine)
        ]

    async def begin(self, user: str, address: str) -> Attempt:
        now = self._clock.now()
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)  # BSON keeps milliseconds
        keys = (f"user:{user}|{address}", f"address:{address}")
        ids = (uuid.uuid4().hex, uuid.uuid4().hex)
        await self._failures.insert_many(
            [{"_id": i, "key": k, "at": now} for i, k in zip(ids, keys, strict=True)]
        )
        limits = self._limits
        wait = max(
            backoff(await self._before(keys[0], now, ids[0]), limits.per_user, limits.window, now),
            backoff(
                await self._before(keys[1], now, ids[1]), limits.per_address, limits.window, now
            ),
        )
        await self._failures.delete_many({"at": {"$lte": now - limits.window}})
        return Attempt(user, address, ids, wait)

    async def withdraw(self, attempt: Attempt) -> None:
        """A refused attempt checked nothing, so it does not make the wait longer."""
        await self._failures.delete_many({"_id": {"$in": list(attempt.ids)}})

    async def succeeded(self, attempt: Attempt) -> None:
        """A right password clears the user's failures from this address, and its own count."""
        await self._failures.delete_many(
            {"$or": [{"key": f"user:{attempt.user}|{attempt.address}"}, {"_id": attempt.ids[1]}]}
        )
