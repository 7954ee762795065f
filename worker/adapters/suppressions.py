"""The `suppressions` collection: customer addresses that bounced hard, per order or per store.

The records of services/suppression.py, which owns the rule and is their only caller: an order's
customer (and, with CT_BOUNCE_SUPPRESS_STORE, that address for every order of the store) is not
emailed until an operator lifts it with `ct alias unsuppress`. One document per scope, read by
`_id` (FerretDB v1 uses no other index): `order<US><orderId>` and
`store<US><storeId><US><address hash>`; the hash is the keyed one of crypto.AddressCipher, so no
document holds the address.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pymongo.errors import DuplicateKeyError

from worker.adapters.alias_writes import KEY_SEPARATOR
from worker.adapters.dialect import Dialect, Document
from worker.adapters.mongo import Database

Scope = Literal["order", "store"]


@dataclass(frozen=True, slots=True)
class Suppression:
    scope: Scope
    order_id: str  # the order whose bounce started it
    store_id: str
    status: str  # the bounce's status code, e.g. 5.1.1
    cause_event_id: str  # the DELIVERY_FAILED entry of that bounce
    since: datetime


def _order_key(order_id: str) -> str:
    if KEY_SEPARATOR in order_id:
        raise ValueError("an order id may not contain the key separator U+001F")
    return f"order{KEY_SEPARATOR}{order_id}"


def _store_key(store_id: str, address_hash: str) -> str:
    return f"store{KEY_SEPARATOR}{store_id}{KEY_SEPARATOR}{address_hash}"


class Suppressions:
    def __init__(self, db: Database, dialect: Dialect, *, store_wide: bool) -> None:
        self._docs = db["suppressions"]
        self._dialect = dialect
        self._store_wide = store_wide

    def _keys(self, order_id: str, store_id: str, address_hash: str, *, every: bool) -> list[str]:
        keys = [_order_key(order_id)]
        if self._store_wide or every:
            keys.append(_store_key(store_id, address_hash))
        return keys

    async def suppress(
        self,
        *,
        order_id: str,
        store_id: str,
        address_hash: str,
        status: str,
        cause_event_id: str,
        at: datetime,
    ) -> None:
        """Idempotent: a second bounce keeps the first one's record."""
        for key in self._keys(order_id, store_id, address_hash, every=False):
            doc = {
                "_id": key,
                "scope": key.split(KEY_SEPARATOR, 1)[0],
                "orderId": order_id,
                "storeId": store_id,
                "status": status,
                "causeEventId": cause_event_id,
                "since": at,
            }
            with contextlib.suppress(DuplicateKeyError):
                await self._docs.insert_one(doc)

    async def active(
        self, order_id: str, store_id: str, address_hash: str, *, every: bool = False
    ) -> list[Suppression]:
        """The suppressions in force for this order's customer (store-wide ones if enabled;
        `every` shows store-wide ones whatever the setting, for operators)."""
        keys = self._keys(order_id, store_id, address_hash, every=every)
        docs = await self._dialect.find_each(self._docs, "_id", keys)
        return [_suppression(doc) for doc in docs]

    async def active_many(
        self, customers: Sequence[tuple[str, str, str]]
    ) -> list[list[Suppression]]:
        """`active` for each (order id, store id, address hash), in their order: one read
        for all of them where the server serves `$in` from its index (Dialect.find_each)."""
        keys = [self._keys(*customer, every=False) for customer in customers]
        wanted = [key for each in keys for key in each]
        found = {
            doc["_id"]: doc for doc in await self._dialect.find_each(self._docs, "_id", wanted)
        }
        return [[_suppression(found[k]) for k in each if k in found] for each in keys]

    async def lift(self, order_id: str, store_id: str, address_hash: str) -> list[Suppression]:
        """Remove both scopes, whatever the setting; returns what was lifted."""
        lifted = await self.active(order_id, store_id, address_hash, every=True)
        for key in self._keys(order_id, store_id, address_hash, every=True):
            await self._docs.delete_one({"_id": key})
        return lifted


def _suppression(doc: Document) -> Suppression:
    scope: Scope = "store" if doc["scope"] == "store" else "order"
    return Suppression(
        scope=scope,
        order_id=str(doc["orderId"]),
        store_id=str(doc["storeId"]),
        status=str(doc["status"]),
        cause_event_id=str(doc["causeEventId"]),
        since=doc["since"],
    )
