"""New aliases into `aliases` and their claims into `alias_keys`: one at a time, or a poll's.

Each alias document is inserted first, then claimed by its order key (order + role, or order +
external sender) in `alias_keys`; when two workers make the same order's alias at once exactly
one claim wins and the other deletes its candidate (alias_store.py reads the winner). An address
already taken is a collision: another candidate is tried.

The notifier meets a poll's orders together. `insert_pairs` writes the new orders' pairs with
one unordered insert per collection for the whole poll, where one at a time costs two inserts
per alias, under the same rules per document; what it cannot settle is left to the one-at-a-time
path.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import structlog
from pymongo.errors import DuplicateKeyError

from worker.adapters.alias_sealing import AliasSealing
from worker.adapters.dialect import Document, insert_each
from worker.adapters.mongo import Database
from worker.adapters.stores import StoreSettings
from worker.contracts.events import ParticipantRole
from worker.core.crypto import AddressCipher
from worker.domain import aliases as rules
from worker.domain.aliases import Clock, MaskType, Party

log = structlog.get_logger(__name__)
MAX_COLLISIONS: Final = 8
CUSTOMER: Final = ParticipantRole.CUSTOMER.value
# ASCII unit separator: refused inside order ids, so ("a", "b\x1fc") and ("a\x1fb", "c") differ.
KEY_SEPARATOR: Final = "\x1f"


def order_key(order_id: str, role: ParticipantRole, sender_hash: str | None = None) -> str:
    """The `_id` of an alias's claim in `alias_keys`: one alias per order and role (and sender)."""
    if KEY_SEPARATOR in order_id:
        raise ValueError("an order id may not contain the key separator U+001F")
    if role is ParticipantRole.EXTERNAL:
        if not sender_hash:
            raise ValueError("an EXTERNAL alias is keyed by its sender's hash")
        return f"{order_id}{KEY_SEPARATOR}EXTERNAL{KEY_SEPARATOR}{sender_hash}"
    if sender_hash is not None:
        raise ValueError(f"a {role.value} alias is unique per order; it takes no sender hash")
    return f"{order_id}{KEY_SEPARATOR}{role.value}"


@dataclass(frozen=True, slots=True)
class NewOrder:
    """What an order's aliases are made of: its store and its two parties."""

    store_id: str
    customer: Party
    store: Party


@dataclass(frozen=True, slots=True)
class NewAlias:
    """One alias to make; `candidate` proposes its address (called again after a collision)."""

    candidate: Callable[[], str]
    order_id: str
    store_id: str
    role: ParticipantRole
    mask: MaskType
    token: str | None
    party: Party
    key: str


class AliasWriter:
    def __init__(
        self,
        db: Database,
        cipher: AddressCipher,
        sealing: AliasSealing,
        *,
        domain: str,
        ttl_days: int,
        clock: Clock,
    ) -> None:
        self._aliases = db["aliases"]
        self._keys = db["alias_keys"]
        self._stores = StoreSettings(db)
        self._cipher = cipher
        self._sealing = sealing
        self._domain = domain
        self._ttl_days = ttl_days
        self._clock = clock

    async def insert(self, alias: NewAlias) -> Document | None:
        """Insert and claim a new alias: its document, or None when another worker claimed its
        key first (theirs is the alias); an address collision tries another candidate."""
        created = self._clock.now()
        tried: set[str] = set()
        for _ in range(MAX_COLLISIONS):
            address = alias.candidate()
            if address in tried:  # a deterministic soft alias collided: only hard can differ
                address = rules.new_hard_alias(self._domain)
            tried.add(address)
            doc = await self._document(
                address, alias.key, alias.order_id, alias.store_id, alias.role, alias.mask,
                alias.token, alias.party, created,
            )  # fmt: skip
            try:
                await self._aliases.insert_one(doc)
            except DuplicateKeyError:
                log.info("alias_collision_retried", order_id=alias.order_id, role=alias.role.value)
                continue
            try:
                await self._keys.insert_one(
                    {"_id": alias.key, "alias": address, "orderId": alias.order_id}
                )
            except DuplicateKeyError:
                await self._aliases.delete_one({"_id": address})
                return None
            return doc
        raise RuntimeError(f"no free alias for order {alias.order_id} after {MAX_COLLISIONS} tries")

    async def insert_pairs(self, orders: Mapping[str, NewOrder]) -> dict[str, list[Document]]:
        """The customer and store aliases of these new orders, written together: the documents
        of each order this worker settled. The customers' claims go first: an order belongs to
        whoever wins its customer claim, and only the winner claims the store alias, so no order
        gets one worker's customer alias and another's store alias (with another soft token).
        An order left out (an address taken, a claim another worker won) is for `insert`."""
        created = self._clock.now()
        await self._sealing.prepare([o.customer.address for o in orders.values()], created)
        masks = {s: (await self._stores.get(s)).mask for s in {o.store_id for o in orders.values()}}
        docs: list[Document] = []
        for order_id, new in orders.items():
            plan = rules.choose_order_aliases(
                masks[new.store_id], new.customer.address, new.store.address, self._domain
            )
            if plan.fell_back:
                log.warning("soft_alias_fell_back_to_hard", order_id=order_id)
            for role, party, address in (
                (ParticipantRole.CUSTOMER, new.customer, plan.customer_alias),
                (ParticipantRole.STORE, new.store, plan.store_alias),
            ):
                docs.append(
                    await self._document(
                        address, order_key(order_id, role), order_id, new.store_id, role,
                        plan.mask, plan.token, party, created,
                    )
                )  # fmt: skip
        stored = await insert_each(self._aliases, docs)
        claimed = await self._claim([d for d in docs if d["role"] == CUSTOMER], stored)
        won = {d["orderId"] for d in docs if d["orderKey"] in claimed}
        stores = [d for d in docs if d["role"] != CUSTOMER and d["orderId"] in won]
        claimed |= await self._claim(stores, stored)
        settled: dict[str, list[Document]] = defaultdict(list)
        for doc in docs:
            if doc["orderKey"] in claimed:
                settled[doc["orderId"]].append(doc)
            elif doc["_id"] in stored:  # its claim went to another worker: theirs stands
                await self._aliases.delete_one({"_id": doc["_id"]})
        return settled

    async def _claim(self, docs: list[Document], stored: set[str]) -> set[str]:
        """Claim the order keys of these alias documents (those stored) in one insert; the keys
        this worker won."""
        claims = [
            {"_id": d["orderKey"], "alias": d["_id"], "orderId": d["orderId"]}
            for d in docs
            if d["_id"] in stored
        ]
        return await insert_each(self._keys, claims)

    async def _document(  # noqa: PLR0917 - private, called in two places with every field
        self,
        address: str,
        key: str,
        order_id: str,
        store_id: str,
        role: ParticipantRole,
        mask: MaskType,
        token: str | None,
        party: Party,
        created: datetime,
    ) -> Document:
        return {
            "_id": address,
            "orderKey": key,
            "orderId": order_id,
            "storeId": store_id,
            "role": role.value,
            "mask": mask.value,
            "token": token,
            "realHash": self._cipher.address_hash(party.address),
            "createdAt": created,
            "expiresAt": rules.expires_at(created, self._ttl_days),
            **await self._sealing.sealed(party, address, role, created),
        }
