"""The `audit` collection: who looked behind a mask, opened a message, changed a setting or an
account, or replayed a dead letter; when and why. Written before anything shows or happens.

One flat document per entry: `at`, `action`, `operator`, `reason`, and identifiers (`orderId`,
`alias`, a message's event id, a store or user name), never a real address.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from pymongo import DESCENDING, IndexModel

from worker.adapters.dialect import Document
from worker.adapters.mongo import Database
from worker.adapters.paging import BadCursor, after, decode_cursor, encode_cursor

INDEXES = {"audit": [IndexModel([("at", DESCENDING)], name="recent")]}
_NAMED = frozenset({"_id", "at", "action", "operator", "reason", "orderId", "alias"})


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
        reason=doc.get("reason") or None,
        order_id=doc.get("orderId"),
        alias=doc.get("alias"),
        detail={k: v for k, v in doc.items() if k not in _NAMED and v is not None},
    )


class AuditLog:
    def __init__(self, db: Database) -> None:
        self._audit = db["audit"]

    async def record(
        self, action: str, *, operator: str, reason: str | None = None, **details: Any
    ) -> None:
        """One entry; `details` hold identifiers (an alias, an order id), never a real address."""
        await self._audit.insert_one(
            {
                "at": datetime.now(UTC),
                "action": action,
                "operator": operator,
                "reason": reason,
                **details,
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
        last = docs[limit - 1] if len(docs) > limit else None
        return entries, encode_cursor(last["at"], str(last["_id"])) if last else None
