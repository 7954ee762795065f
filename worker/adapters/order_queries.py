"""Finding orders for people: by id, by an alias of theirs, by store and status, newest first.

Reads only; the projector owns these documents' timeline fields (worker.adapters.orders). The
timeline itself is read through worker.services.timeline. Lists never load the timelines.

Every read takes the principal's scope and puts it into the query itself (`storeId` in its
stores, served by the `store_recent` index), so an order of another store is never read, and
answers exactly as one that does not exist: same result, same number of queries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from pymongo import DESCENDING

from worker.adapters.dialect import Document
from worker.adapters.mongo import Database
from worker.adapters.paging import after, decode_cursor, encode_cursor
from worker.domain.scope import Scope

SUMMARY_FIELDS = {"storeId": 1, "status": 1, "statusAt": 1, "updatedAt": 1, "entryCount": 1}


@dataclass(frozen=True, slots=True)
class OrderSummary:
    order_id: str
    store_id: str
    status: str | None
    status_at: datetime | None
    updated_at: datetime | None
    entry_count: int


def _summary(doc: Document) -> OrderSummary:
    return OrderSummary(
        order_id=doc["_id"],
        store_id=doc.get("storeId", ""),
        status=doc.get("status"),
        status_at=doc.get("statusAt"),
        updated_at=doc.get("updatedAt"),
        entry_count=int(doc.get("entryCount", 0)),
    )


def _scoped(scope: Scope, query: Document) -> Document:
    if scope.stores is None:
        return query
    return {**query, "storeId": {"$in": sorted(scope.stores)}}


class OrderQueries:
    def __init__(self, db: Database) -> None:
        self._orders = db["orders"]
        self._aliases = db["aliases"]

    async def summary(self, order_id: str, scope: Scope) -> OrderSummary | None:
        doc = await self._orders.find_one(_scoped(scope, {"_id": order_id}), SUMMARY_FIELDS)
        return _summary(doc) if doc else None

    async def order_of_alias(self, alias: str, scope: Scope) -> str | None:
        query = _scoped(scope, {"_id": alias.strip().lower()})
        doc = await self._aliases.find_one(query, {"orderId": 1})
        return doc["orderId"] if doc else None

    async def store_ids(self, scope: Scope) -> list[str]:
        found = await self._orders.distinct("storeId", _scoped(scope, {}))
        return sorted(s for s in found if isinstance(s, str))

    async def search(
        self,
        *,
        scope: Scope,
        store_id: str | None = None,
        status: str | None = None,
        text: str | None = None,
        cursor: str | None = None,
        limit: int = 25,
    ) -> tuple[list[OrderSummary], str | None]:
        """Orders matching every filter given, most recently updated first, and the next cursor.

        `text` is an alias address (finds its order), else an order id or the start of one.
        """
        filters: list[Document] = []
        if scope.stores is not None:
            filters.append({"storeId": {"$in": sorted(scope.stores)}})
        if store_id:
            filters.append({"storeId": store_id})
        if status:
            filters.append({"status": status})
        if text := (text or "").strip():
            if "@" in text:
                order_id = await self.order_of_alias(text, scope)
                if order_id is None:
                    return [], None
                filters.append({"_id": order_id})
            # Whether the exact id exists is asked within the scope too: else another store's
            # order would turn a prefix search into an exact one, and tell that it exists.
            elif await self._orders.find_one(_scoped(scope, {"_id": text}), {"_id": 1}):
                filters.append({"_id": text})
            else:
                filters.append({"_id": {"$regex": "^" + re.escape(text)}})
        if cursor:
            at, key = decode_cursor(cursor)
            filters.append(after(at, key, "updatedAt", "_id"))
        query: Document = {"$and": filters} if filters else {}
        found = self._orders.find(query, SUMMARY_FIELDS).sort(
            [("updatedAt", DESCENDING), ("_id", DESCENDING)]
        )
        docs = await found.limit(limit + 1).to_list()
        orders = [_summary(doc) for doc in docs[:limit]]
        if len(docs) <= limit:
            return orders, None
        last = orders[-1]
        return orders, encode_cursor(last.updated_at, last.order_id)
