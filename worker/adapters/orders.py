"""The `orders` collection: the projector's writes and the timeline queries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import bson
from bson.codec_options import CodecOptions
from cachetools import LRUCache
from pymongo import InsertOne, UpdateOne
from pymongo.errors import BulkWriteError

from worker.adapters.dialect import Dialect, Document
from worker.adapters.mongo import Database
from worker.contracts.events import TimelineEvent
from worker.domain.projection import entry_of, merge

DUPLICATE_KEY = 11000
MAX_CONFLICT_ROUNDS = 20
# Older timeline entries of an order past its size budget: one document per entry, `_id` its
# event id (so moving one twice is harmless), read back by `read_timeline`.
OVERFLOW = "order_timeline_overflow"
# MongoDB refuses documents over 16 MiB: the projector moves an order's oldest entries out before
# its document reaches this, down to three quarters of it (so it does not move some every batch).
DEFAULT_MAX_DOCUMENT_BYTES = 8 * 1024 * 1024
# How a document read back looks: time zone aware, datetimes to the millisecond.
_AS_READ: CodecOptions[Document] = CodecOptions(tz_aware=True)


async def read_timeline(db: Database, order_id: str) -> list[TimelineEvent] | None:
    """The order's timeline entries, oldest first, those moved to the overflow collection
    included; None when the order has no document."""
    doc = await db["orders"].find_one({"_id": order_id}, {"timeline": 1, "overflowCount": 1})
    if doc is None:
        return None
    older: list[Document] = []
    if doc.get("overflowCount"):
        found = db[OVERFLOW].find({"orderId": order_id}, {"entry": 1})
        older = [d["entry"] for d in await found.to_list()]
    entries = [*older, *(doc.get("timeline") or [])]
    events = [TimelineEvent.model_validate(entry) for entry in entries]
    return sorted(events, key=lambda e: (e.occurred_at, e.event_id))


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

    def __init__(
        self,
        db: Database,
        *,
        dialect: Dialect,
        cache_size: int = 0,
        max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES,
    ) -> None:
        self._orders = db["orders"]
        self._overflow = db[OVERFLOW]
        self._budget = max_document_bytes
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
            moved: list[Document] = []
            for order_id, arrived in pending.items():
                doc = current.get(order_id)
                timeline = doc.get("timeline") or [] if doc else []
                older, events = _split_at_watermark(doc, arrived)
                moved += [_overflow_doc(order_id, entry_of(e)) for e in older]
                projection = merge(timeline, events)
                if projection is None:
                    continue
                fields = self._within_budget(order_id, doc, projection.fields(), moved)
                written[order_id] = fields
                new_entries += len(projection.timeline) - len(timeline)
                writes.append(_write_for(order_id, doc, fields, self._dialect.guarded_updates))
            added = new_entries if added is None else added
            try:
                # Moved entries are kept before the documents that no longer hold them.
                await self._keep_overflow(moved)
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

    def _within_budget(
        self, order_id: str, doc: Document | None, fields: dict[str, Any], moved: list[Document]
    ) -> dict[str, Any]:
        """`fields` with the oldest entries moved out (into `moved`) past the size budget."""
        overflowed = int(doc.get("overflowCount") or 0) if doc else 0
        through = doc.get("overflowThrough") if doc else None
        if (
            doc
            and doc.get("statusAt")
            and (fields["statusAt"] is None or _ms(doc["statusAt"]) > _ms(fields["statusAt"]))
        ):
            # The latest status may be among the entries moved out earlier.
            fields |= {"status": doc.get("status"), "statusAt": doc["statusAt"]}
        timeline: list[Document] = fields["timeline"]
        if len(bson.encode({"timeline": timeline})) > self._budget:
            sizes = [len(bson.encode(entry)) for entry in timeline]
            total, cut = sum(sizes), 0
            while cut < len(timeline) - 1 and total > self._budget * 3 // 4:
                total -= sizes[cut]
                cut += 1
            moved += [_overflow_doc(order_id, entry) for entry in timeline[:cut]]
            last = timeline[cut - 1]
            through = {"occurredAt": last["occurredAt"], "eventId": last["eventId"]}
            overflowed += cut
            timeline = timeline[cut:]
        return fields | {
            "timeline": timeline,
            "entryCount": len(timeline) + overflowed,
            "overflowCount": overflowed,
            "overflowThrough": through,
        }

    async def _keep_overflow(self, moved: list[Document]) -> None:
        if not moved:
            return
        try:
            await self._overflow.insert_many(moved, ordered=False)
        except BulkWriteError as exc:
            if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
                raise
        # An entry kept there already still takes a larger count folded into it (as merge does).
        for doc in moved:
            if folded := doc["entry"].get("foldedRefusals"):
                await self._overflow.update_one(
                    {"_id": doc["_id"]}, {"$max": {"entry.foldedRefusals": folded}}
                )

    async def _current(
        self, order_ids: Mapping[str, Any], *, trust_written: bool
    ) -> dict[str, Document]:
        """Each order's document now: as this writer last wrote it, or read from MongoDB."""
        known = {}
        if trust_written and self._written is not None:
            known = {o: self._written[o] for o in order_ids if o in self._written}
        unknown = [o for o in order_ids if o not in known]
        read = await self._dialect.find_each(
            self._orders, "_id", unknown, dict.fromkeys(_READ_FIELDS, 1)
        )
        return known | {doc["_id"]: doc for doc in read}

    def _remember(self, written: Mapping[str, Document]) -> None:
        if self._written is None:
            return
        for order_id, fields in written.items():
            doc = {"_id": order_id} | {k: fields[k] for k in _READ_FIELDS}
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


_READ_FIELDS = ("timeline", "entryCount", "overflowCount", "overflowThrough", "status", "statusAt")


def _ms(at: datetime) -> datetime:
    """`at` as BSON keeps it (milliseconds, UTC): comparable with what a read returns."""
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


def _split_at_watermark(
    doc: Document | None, events: Sequence[TimelineEvent]
) -> tuple[list[TimelineEvent], list[TimelineEvent]]:
    """Events at or before the last entry moved out go to the overflow (a replay, or a late
    event): merged into the document, they would come back beside their moved copies."""
    through = doc.get("overflowThrough") if doc else None
    if not through:
        return [], list(events)
    mark = (_ms(through["occurredAt"]), through["eventId"])
    older = [e for e in events if (_ms(e.occurred_at), e.event_id) <= mark]
    return older, [e for e in events if (_ms(e.occurred_at), e.event_id) > mark]


def _overflow_doc(order_id: str, entry: Document) -> Document:
    return {"_id": entry["eventId"], "orderId": order_id, "entry": entry}


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
