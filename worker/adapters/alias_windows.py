"""The `alias_windows` collection: per order of an orderFlow store, until when its aliases work.

One document per order, `_id` = the order id, written by the notifier as the order's status
events arrive (one writer per order: events are keyed by order id) and read by `_id` wherever
aliases are looked up. An order without one keeps each alias's own `expiresAt` (fixed policy).
"""

from __future__ import annotations

from collections.abc import Iterable

from worker.adapters.dialect import Dialect, Document
from worker.adapters.mongo import Database
from worker.domain.aliases import AliasWindow


def _window(doc: Document) -> AliasWindow:
    return AliasWindow(doc["expiresAt"], bool(doc["closed"]), doc["eventAt"])


class AliasWindows:
    def __init__(self, db: Database, dialect: Dialect) -> None:
        self._windows = db["alias_windows"]
        self._dialect = dialect

    async def get(self, order_id: str) -> AliasWindow | None:
        doc = await self._windows.find_one({"_id": order_id})
        return _window(doc) if doc else None

    async def of_orders(self, order_ids: Iterable[str]) -> dict[str, AliasWindow]:
        """The windows of those of these orders that have one (one `$in` read where it is fast)."""
        docs = await self._dialect.find_each(self._windows, "_id", order_ids)
        return {doc["_id"]: _window(doc) for doc in docs}

    async def put(self, order_id: str, store_id: str, window: AliasWindow) -> None:
        # update_one with upsert on _id alone: nothing can collide, so FerretDB's reply is complete.
        await self._windows.update_one(
            {"_id": order_id},
            {
                "$set": {
                    "storeId": store_id,
                    "expiresAt": window.expires_at,
                    "closed": window.closed,
                    "eventAt": window.event_at,
                }
            },
            upsert=True,
        )
