"""The `audit` collection: who looked behind a mask, opened a message, changed a setting or an
account, or replayed a dead letter; when, why, and for which store. Written before anything
shows or happens.

One flat document per entry: `at`, `action`, `operator`, `reason`, `store` (None: it concerns no
store, a platform operator's business), and identifiers (`orderId`, `alias`, a message's event
id, a user name), never a real address. Entries form a hash chain per store
(worker.domain.audit_chain); `_id` is `chain:number`, so two writers appending to one chain at
once cannot both take the same place: the second insert fails on the key and tries the next.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.errors import DuplicateKeyError

from worker.adapters.dialect import Document
from worker.adapters.mongo import Database
from worker.adapters.paging import after, decode_cursor, encode_cursor
from worker.domain.audit_chain import GENESIS, ChainReport, chain_of, link_digest, verify_chain
from worker.domain.scope import Scope

INDEXES = {
    "audit": [
        IndexModel([("at", DESCENDING)], name="recent"),
        IndexModel([("store", ASCENDING), ("at", DESCENDING)], name="store_recent"),
        IndexModel([("chain", ASCENDING), ("seq", DESCENDING)], name="chain"),
    ]
}
APPEND_TRIES = 50
_NAMED = frozenset(
    {"_id", "at", "action", "operator", "reason", "orderId", "alias", "store"}
    | {"chain", "seq", "prev", "digest"}
)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    entry_id: str
    at: datetime
    action: str
    operator: str
    reason: str | None
    order_id: str | None
    alias: str | None
    store: str | None = None
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
        store=doc.get("store"),
        detail={k: v for k, v in doc.items() if k not in _NAMED and v is not None},
    )


def scope_filter(scope: Scope, store_field: str = "store") -> Document | None:
    """The query clause that keeps a scoped principal to its stores (None: platform)."""
    return None if scope.stores is None else {store_field: {"$in": sorted(scope.stores)}}


class AuditLog:
    def __init__(self, db: Database) -> None:
        self._audit = db["audit"]

    async def record(
        self,
        action: str,
        *,
        operator: str,
        store: str | None,
        reason: str | None = None,
        **details: Any,
    ) -> None:
        """One entry, linked into its store's chain; `details` hold identifiers, never an
        address. `store` is required: None says on purpose that the entry concerns no store."""
        chain = chain_of(store)
        now = datetime.now(UTC)
        at = now.replace(microsecond=now.microsecond // 1000 * 1000)  # what BSON keeps
        for _ in range(APPEND_TRIES):
            head = await self._audit.find_one(
                {"chain": chain}, {"seq": 1, "digest": 1}, sort=[("seq", DESCENDING)]
            )
            seq = int(head["seq"]) + 1 if head else 1
            doc: Document = {
                "_id": f"{chain}:{seq:012d}",
                "at": at,
                "action": action,
                "operator": operator,
                "reason": reason,
                "store": store,
                **details,
                "chain": chain,
                "seq": seq,
                "prev": head["digest"] if head else GENESIS,
            }
            doc["digest"] = link_digest(doc)
            try:
                await self._audit.insert_one(doc)
            except DuplicateKeyError:
                continue  # another writer took this place in the chain: link after it
            return
        raise RuntimeError(f"audit chain {chain!r}: {APPEND_TRIES} writers raced for its head")

    async def page(
        self,
        *,
        scope: Scope,
        action: str | None = None,
        operator: str | None = None,
        order_id: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> tuple[list[AuditEntry], str | None]:
        """Newest first, within `scope`; the entries and the cursor of the next page."""
        filters: list[Document] = []
        if (scoped := scope_filter(scope)) is not None:
            filters.append(scoped)
        if action:
            filters.append({"action": action})
        if operator:
            filters.append({"operator": operator})
        if order_id:
            filters.append({"orderId": order_id})
        if cursor:
            at, key = decode_cursor(cursor)
            filters.append(after(at, key, "at", "_id"))
        query: Document = {"$and": filters} if filters else {}
        found = self._audit.find(query).sort([("at", DESCENDING), ("_id", DESCENDING)])
        docs = await found.limit(limit + 1).to_list()
        entries = [_entry(doc) for doc in docs[:limit]]
        last = docs[limit - 1] if len(docs) > limit else None
        return entries, encode_cursor(last["at"], str(last["_id"])) if last else None

    async def chains(self, scope: Scope) -> list[str]:
        if scope.stores is not None:
            return sorted(scope.stores)
        names = await self._audit.distinct("chain")
        return sorted(n for n in names if isinstance(n, str))

    async def _links(self, chain: str) -> AsyncIterator[Document]:
        async for doc in self._audit.find({"chain": chain}).sort("seq", ASCENDING):
            yield doc

    async def verify_chain(self, chain: str) -> ChainReport:
        """One chain, walked from its first entry."""
        return verify_chain(chain, [doc async for doc in self._links(chain)])

    async def verify(self, scope: Scope) -> list[ChainReport]:
        """Every chain `scope` reaches; one report per chain."""
        return [await self.verify_chain(chain) for chain in await self.chains(scope)]
