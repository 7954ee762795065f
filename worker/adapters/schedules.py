"""The `schedules` collection: when each periodic job of the deployment is next due.

One document per job, `_id` its name, `dueAt` the time it is due. A process claims a run by
inserting a document named by the due time it claims, then moving `dueAt` on: of the replicas
that try at once one wins, and a restart runs nothing the deployment ran already. (Retention
ran once at every notifier's start before: on FerretDB, which serves a query without `_id` by
scanning the collection, that was three scans of the kept messages per start, competing with the
first emails.)
A claim is kept CLAIMS_KEPT, far longer than any process takes between reading a due time and
claiming it, then deleted by the next claim of its job, so the collection stays a few documents.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pymongo.errors import DuplicateKeyError

from worker.adapters.mongo import Database

CLAIMS_KEPT = timedelta(days=7)


class Schedules:
    def __init__(self, db: Database) -> None:
        self._schedules = db["schedules"]
        self._claims = db["schedule_claims"]

    async def due_at(self, job: str) -> datetime | None:
        """When `job` is next due; None: it never ran here, so it is due."""
        doc = await self._schedules.find_one({"_id": job})
        return None if doc is None else doc["dueAt"]

    async def claim(self, job: str, *, now: datetime, every: timedelta) -> bool:
        """True when the caller is to run `job` now: it was due (or had never run), and it is
        due again `every` from `now`. False: it is not due, or another process claimed it.

        The claim is an insert of the due time's own document: a unique `_id` is the one
        compare-and-set FerretDB makes atomic (two of its conditional updates can both match)."""
        due = await self.due_at(job)
        if due is not None and due > now:
            return False
        try:
            claimed = f"{job}@{due.isoformat() if due else 'first'}"
            await self._claims.insert_one({"_id": claimed, "job": job, "claimedAt": now})
        except DuplicateKeyError:
            return False  # another process claimed this due time
        await self._schedules.update_one(
            {"_id": job}, {"$set": {"dueAt": now + every, "claimedAt": now}}, upsert=True
        )
        await self._claims.delete_many({"job": job, "claimedAt": {"$lt": now - CLAIMS_KEPT}})
        return True

    async def defer(self, job: str, *, until: datetime) -> None:
        """Make `job` due at `until` (a failed run is tried again before its next day)."""
        await self._schedules.update_one({"_id": job}, {"$set": {"dueAt": until}})
