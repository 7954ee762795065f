"""The `orders` collection: the projector's writes and the timeline queries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pymongo import UpdateOne
from pymongo.errors import BulkWriteError

from worker.adapters.mongo import Database, Document
from worker.domain.timeline import merge
from worker.events import TimelineEvent

DUPLICATE_KEY = 11000
MAX_CONFLICT_ROUNDS = 20


class OrdersRepository:
    """Writes only the projector's own fields of an order document; an OMS may own the rest.

    Every write is conditional on the `entryCount` the merge was computed from. FerretDB v1 (and
    MongoDB under a rebalance, when two projectors briefly own one partition) could otherwise
    interleave two read-merge-writes of one order and lose an entry; a stale write instead matches
    nothing, its upsert collides on `_id`, and that order is merged again.
    """

    def __init__(self, db: Database) -> None:
        self._orders = db["orders"]

    async def project(self, events_by_order: Mapping[str, Sequence[TimelineEvent]]) -> int:
        """Merge each order's events into its document, one bulk_write per round. Returns entries added."""
        pending = dict(events_by_order)
        added = 0
        for _ in range(MAX_CONFLICT_ROUNDS):
            if not pending:
                return added
            current = {
                doc["_id"]: doc
                async for doc in self._orders.find(
                    {"_id": {"$in": list(pending)}}, {"timeline": 1, "entryCount": 1}
                )
            }
            operations: list[UpdateOne] = []
            counts: list[tuple[str, int]] = []
            for order_id, events in pending.items():
                doc = current.get(order_id, {})
                timeline = doc.get("timeline") or []
                projection = merge(timeline, events)
                if projection is None:
                    continue
                guard: dict[str, Any] = (
                    {"entryCount": doc["entryCount"]} if "entryCount" in doc else {"entryCount": {"$exists": False}}
                )
                operations.append(
                    UpdateOne({"_id": order_id, **guard}, {"$set": projection.fields()}, upsert=True)
                )
                counts.append((order_id, len(projection.timeline) - len(timeline)))
            if not operations:
                return added
            conflicted = await self._write(operations)
            added += sum(n for i, (_, n) in enumerate(counts) if i not in conflicted)
            pending = {counts[i][0]: pending[counts[i][0]] for i in conflicted}
        raise RuntimeError(f"orders kept changing under the projector: {sorted(pending)[:5]}")

    async def _write(self, operations: list[UpdateOne]) -> set[int]:
        """bulk_write; returns the indexes of the operations that lost a race (to be merged again)."""
        try:
            await self._orders.bulk_write(operations, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise
            return {e["index"] for e in errors}
        return set()

    async def find(self, order_id: str) -> Document | None:
        return await self._orders.find_one({"_id": order_id})
