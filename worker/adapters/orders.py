"""The `orders` collection: the projector's writes and the timeline queries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import bson
from bson.codec_options import CodecOptions
from cachetools import LRUCache
from pymongo import InsertOne, UpdateOne
from pymongo.errors import BulkWriteError

from worker.adapters.dialect import Dialect, Document
from worker.adapters.mongo import Database
from worker.contracts.events import TimelineEvent
from worker.domain.projection import merge

DUPLICATE_KEY = 11000
MAX_CONFLICT_ROUNDS = 20
# How a document read back looks: time zone aware, datetimes to the millisecond.
_AS_READ: CodecOptions[Document] = CodecOptions(tz_aware=True)


async def read_timeline(db: Database, order_id: str) -> list[TimelineEvent] | None:
    """The order's timeline entries, oldest first; None when the order has no document."""
    doc = await db["orders"].find_one({"_id": order_id}, {"timeline": 1})
    if doc is None:
        return None
    return [TimelineEvent.model_validate(entry) for entry in doc.get("timeline") or []]


class OrdersRepository:
    """Writes only the projector's own fields of an order document; an OMS may own the rest.

    One writer per order is the design: timeline events are keyed by order id, so one consumer
    owns an order's partition, a batch writes each order once, and a revoked partition is
    committed only after its batch is written. On top of that, every update is conditional on
    the `entryCount` its merge was computed from and a new document is an insert, so on MongoDB a
    stale writer (a consumer that lost its partition mid-batch) matches nothing or collides on
    `_id`, and the next round reads and merges that order again. FerretDB v1 evaluates such a
    conditional update as a non-atomic read-modify-write, so there the guard narrows the window
    but the single-writer rule is what holds.
    """

    def __init__(self, db: Database, *, dialect: Dialect, cache_size: int = 0) -> None:
        self._orders = db["orders"]
        # Without guarded updates (FerretDB) every update scanned the collection with the guard
        # (40 s for a 500-record batch at 2,000 orders), and there it is not atomic anyway.
        self._dialect = dialect
        # The documents this writer wrote last, as a read would return them: while it owns an
        # order's partition nobody else writes that document, so reading it again only costs.
        # The owner of the consumer clears it whenever the partitions are assigned anew
        # (`forget`), since another writer may have owned them in between.
        self._written: LRUCache[str, Document] | None = (
            LRUCache(maxsize=cache_size) if cache_size else None
        )

    def forget(self) -> None:
        """Read every order from MongoDB again: its partitions may have had another owner."""
        if self._written is not None:
            self._written.clear()

    async def project(self, events_by_order: Mapping[str, Sequence[TimelineEvent]]) -> int:
        """Merge each order's events into its document; returns the number of entries added."""
        pending = dict(events_by_order)
        added: int | None = None  # counted against the first read; later rounds only retry
        for _ in range(MAX_CONFLICT_ROUNDS):
            # Only the first round may trust what this writer wrote: a lost race means another
            # writer was there, and those orders are read again.
            current = await self._current(pending, trust_written=added is None)
            writes: list[InsertOne[Document] | UpdateOne] = []
            written: dict[str, Document] = {}
            new_entries = 0
            for order_id, events in pending.items():
                doc = current.get(order_id)
                timeline = doc.get("timeline") or [] if doc else []
                projection = merge(timeline, events)
                if projection is None:
                    continue
                fields = projection.fields()
                written[order_id] = fields
                new_entries += len(projection.timeline) - len(timeline)
                writes.append(_write_for(order_id, doc, fields, self._dialect.guarded_updates))
            added = new_entries if added is None else added
            try:
                lost = bool(writes) and await self._bulk_write(writes)
            except BaseException:
                self.forget()  # some writes may have landed: what they left is unknown here
                raise
            if not lost:
                self._remember(written)
                return added
            for order_id in written:
                self._forget_one(order_id)
            pending = {order_id: pending[order_id] for order_id in written}
        raise RuntimeError(f"orders kept changing under the projector: {sorted(pending)[:5]}")

    async def _current(
        self, order_ids: Mapping[str, Any], *, trust_written: bool
    ) -> dict[str, Document]:
        """Each order's document now: as this writer last wrote it, or read from MongoDB."""
        known = {}
        if trust_written and self._written is not None:
            known = {o: self._written[o] for o in order_ids if o in self._written}
        unknown = [o for o in order_ids if o not in known]
        read = await self._dialect.find_each(
            self._orders, "_id", unknown, {"timeline": 1, "entryCount": 1}
        )
        return known | {doc["_id"]: doc for doc in read}

    def _remember(self, written: Mapping[str, Document]) -> None:
        if self._written is None:
            return
        for order_id, fields in written.items():
            doc = {
                "_id": order_id,
                "timeline": fields["timeline"],
                "entryCount": fields["entryCount"],
            }
            # Through BSON and back: the same millisecond datetimes a read would give the merge.
            self._written[order_id] = bson.decode(bson.encode(doc), codec_options=_AS_READ)

    def _forget_one(self, order_id: str) -> None:
        if self._written is not None:
            self._written.pop(order_id, None)

    async def _bulk_write(self, writes: list[InsertOne[Document] | UpdateOne]) -> bool:
        """bulk_write in chunks of the dialect's writes_per_command; True when a write lost a race
        and its orders must be merged again."""
        lost = False
        size = self._dialect.writes_per_command
        for start in range(0, len(writes), size):
            chunk = writes[start : start + size]
            updates = sum(isinstance(w, UpdateOne) for w in chunk)
            try:
                result = await self._orders.bulk_write(chunk, ordered=False)
            except BulkWriteError as exc:
                if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
                    raise
                lost = True
                continue
            lost = lost or result.matched_count < updates
        return lost


def _write_for(
    order_id: str, doc: Document | None, fields: dict[str, Any], guarded: bool = True
) -> InsertOne[Document] | UpdateOne:
    if doc is None:
        return InsertOne({"_id": order_id, **fields})
    if not guarded:
        return UpdateOne({"_id": order_id}, {"$set": fields})
    guard: dict[str, Any] = (
        {"entryCount": doc["entryCount"]}
        if "entryCount" in doc
        else {"entryCount": {"$exists": False}}
    )
    return UpdateOne({"_id": order_id, **guard}, {"$set": fields})
