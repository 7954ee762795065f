"""The `audit` collection: who unmasked, opened, changed or replayed what, when and why.

`ct alias resolve` (worker.admin) writes its records here too, in the same shape: `at`,
`action`, `operator`, `reason`, `orderId`, `alias`, plus what the action needs in `detail`.
A record is written before whatever it covers is shown or done.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from pymongo import DESCENDING, IndexModel

from worker.adapters.mongo import Database, Document
from worker.adapters.paging import BadCursor, after, decode_cursor, encode_cursor
from worker.domain.aliases import Clock

INDEXES = {"audit": [IndexModel([("at", DESCENDING)], name="recent")]}


@dataclass(frozen=True, slots=True)
class AuditEntry:
    entry_id: str
    at: datetime
    action: str
    operator: str
    reason: str | None
    order_id: str | None
    alias: str | None
    detail: dict[str, Any] = field(default_factory=dict)


def _entry(doc: Document) -> AuditEntry:
    return AuditEntry(
        entry_id=str(doc["_id"]),
        at=doc["at"],
        action=doc.get("action", ""),
        operator=doc.get("operator", ""),
        reason=doc.get("reason"),
        order_id=doc.get("orderId"),
        alias=doc.get("alias"),
        detail=dict(doc.get("detail") or {}),
    )


class AuditLog:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._audit = db["audit"]
        self._clock = clock

    async def record(
        self,
        action: str,
        operator: str,
        *,
        reason: str | None = None,
        order_id: str | None = None,
        alias: str | None = None,
        **detail: Any,
    ) -> None:
        await self._audit.insert_one(
            {
                "at": self._clock.now(),
                "action": action,
                "operator": operator,
                "reason": reason,
                "orderId": order_id,
                "alias": alias,
                "detail": detail,
            }
        )

    async def page(
        self,
        *,
        action: str | None = None,
        operator: str | None = None,
        order_id: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> tuple[list[AuditEntry], str | None]:
        """Newest first; returns the entries and the cursor of the next page (None: no more)."""
        query: Document = {}
        if action:
            query["action"] = action
        if operator:
            query["operator"] = operator
        if order_id:
            query["orderId"] = order_id
        if cursor:
            at, key = decode_cursor(cursor)
            try:
                position = ObjectId(key)
            except InvalidId:
                raise BadCursor("the cursor is not one this API gave out") from None
            query = {"$and": [query, after(at, position, "at", "_id")]}
        found = self._audit.find(query).sort([("at", DESCENDING), ("_id", DESCENDING)])
        docs = await found.limit(limit + 1).to_list()
        entries = [_entry(doc) for doc in docs[:limit]]
        more = len(docs) > limit
        last = docs[limit - 1] if more else None
        return entries, encode_cursor(last["at"], str(last["_id"])) if last else None
