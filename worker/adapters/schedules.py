"""The `schedules` collection: when each periodic job of the deployment is next due.

One document per job, `_id` its name, `dueAt` the time it is due. A process claims a run by
moving `dueAt` on, in one update that matches only a job that is due: of the replicas that try at
once one wins, and a restart runs nothing the deployment ran already. (Retention ran once at every
notifier's start before: on FerretDB, which serves a query without `_id` by scanning the
collection, that was three scans of the kept messages per start, competing with the first emails.)
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pymongo.errors import DuplicateKeyError

from worker.adapters.mongo import Database


class Schedules:
    def __init__(self, db: Database) -> None:
        self._schedules = db["schedules"]

    async def due_at(self, job: str) -> datetime | None:
        """When `job` is next due; None: it never ran here, so it is due."""
        doc = await self._schedules.find_one({"_id": job})
        return None if doc is None else doc["dueAt"]

    async def claim(self, job: str, *, now: datetime, every: timedelta) -> bool:
        """True when the caller is to run `job` now: it was due (or had never run), and it is
        due again `every` from `now`. False: it is not due, or another process claimed it."""
        try:
            result = await self._schedules.update_one(
                {"_id": job, "dueAt": {"$lte": now}},
                {"$set": {"dueAt": now + every, "claimedAt": now}},
                upsert=True,
            )
        except DuplicateKeyError:
            # The job's document exists and did not match: not due, so the upsert's insert of
            # a second document with its `_id` was refused.
            return False
        return result.matched_count == 1 or result.upserted_id is not None

    async def defer(self, job: str, *, until: datetime) -> None:
        """Make `job` due at `until` (a failed run is tried again before its next day)."""
        await self._schedules.update_one({"_id": job}, {"$set": {"dueAt": until}})
