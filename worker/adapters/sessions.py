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
    digest,
    new_csrf_token,
    new_session_secret,
    retry_after,
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

    async def end_all(self, user: str) -> int:
        """Log a user out everywhere: after a password change, a role change or removal."""
        return (await self._sessions.delete_many({"user": user})).deleted_count

    async def sweep(self) -> int:
        """Delete sessions past their absolute or idle expiry."""
        now = self._clock.now()
        result = await self._sessions.delete_many(
            {"$or": [{"expiresAt": {"$lte": now}}, {"lastSeenAt": {"$lte": now - self._idle}}]}
        )
        return result.deleted_count


class LoginThrottle:
    """Failed logins per user name and per client address, in a sliding window.

    One document per failure, inserted (atomic on every server) rather than a counter updated
    in place: FerretDB v1 evaluates `$inc` as a read-modify-write, so concurrent failures, which
    is what a password-guessing script makes, could lose counts.
    """

    def __init__(self, db: Database, limits: LoginLimits, clock: Clock) -> None:
        self._failures = db["login_failures"]
        self._limits = limits
        self._clock = clock

    async def _failures_of(self, key: str, now: datetime) -> list[datetime]:
        since = now - self._limits.window
        docs = self._failures.find({"key": key, "at": {"$gt": since}}, {"at": 1})
        return [doc["at"] async for doc in docs]

    async def retry_after(self, user: str, address: str) -> float:
        """Seconds until this user may try again from this address (0: now)."""
        now = self._clock.now()
        window = self._limits.window
        by_user = retry_after(
            await self._failures_of(f"user:{user}", now), self._limits.per_user, window, now
        )
        by_address = retry_after(
            await self._failures_of(f"address:{address}", now),
            self._limits.per_address,
            window,
            now,
        )
        return max(by_user, by_address)

    async def failed(self, user: str, address: str) -> None:
        now = self._clock.now()
        await self._failures.insert_many(
            [
                {"_id": uuid.uuid4().hex, "key": f"user:{user}", "at": now},
                {"_id": uuid.uuid4().hex, "key": f"address:{address}", "at": now},
            ]
        )
        await self._failures.delete_many({"at": {"$lte": now - self._limits.window}})

    async def succeeded(self, user: str) -> None:
        """A right password clears the name's failures; the address keeps its count."""
        await self._failures.delete_many({"key": f"user:{user}"})
