"""The `aliases` collection: one document per alias, the real address encrypted at rest.

Get-or-create is race-free without transactions (FerretDB has none): each alias has an order key
(order + role, or order + external sender) claimed by inserting `{_id: orderKey, alias}` into
`alias_keys`, so when two workers create the same order's alias at once exactly one claim wins;
the other deletes its candidate and reads the winner. Every lookup is a read by `_id`: FerretDB v1
on SQLite uses no other index for queries (a read by any other field scans the collection).
The customer alias is created first and fixes the order's mask type and soft token; the store
alias is derived from it, so an order never mixes mask types.

An order's alias pair, once created, never changes (re-encryption keeps the address it holds;
expiry is decided from `expires_at` at each use), so a worker may keep the pairs it read or made
in memory: a bounded LRU, entries dropped after CACHE_TTL_S all the same. A remembered absence
is only a hint: creating an alias that another worker made meanwhile loses the claim race and
reads the winner, exactly as without the cache.

A store whose `aliasExpiry` is `orderFlow` has its orders' aliases expire with the order's
window (alias_windows.py) instead of their own `expiresAt`; records carry the window's expiry,
so a cached record sees a window moved by another process at most CACHE_TTL_S late.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

import structlog
from bson import Binary
from cachetools import TTLCache
from pymongo.errors import DuplicateKeyError

from worker.adapters.alias_erasure import AliasErasure
from worker.adapters.alias_sealing import AliasSealing, Keys
from worker.adapters.alias_windows import AliasWindows
from worker.adapters.alias_writes import AliasWriter, NewAlias, NewOrder, order_key
from worker.adapters.dialect import Dialect, Document
from worker.adapters.mongo import Database
from worker.adapters.stores import StoreSettings
from worker.adapters.subject_keys import SubjectKeys
from worker.contracts.events import ParticipantRole
from worker.core.crypto import AddressCipher
from worker.domain import aliases as rules
from worker.domain.aliases import AliasExpiry, AliasWindow, Clock, MaskType, Party
from worker.domain.conversation import mask_of

log = structlog.get_logger(__name__)
CACHE_TTL_S = 300.0
# A store's switch to or from orderFlow reaches a caching notifier this late.
POLICY_TTL_S = 30.0
ROLES = (ParticipantRole.CUSTOMER, ParticipantRole.STORE)
OrderAliases = dict[ParticipantRole, "AliasRecord"]


@dataclass(frozen=True, slots=True)
class AliasRecord:
    address: str
    order_id: str
    store_id: str
    role: ParticipantRole
    mask: MaskType
    token: str | None
    real_address: str
    real_hash: str
    name: str | None
    created_at: datetime
    expires_at: datetime
    # The person behind it asked to be erased: no real address, no name, mail refused.
    erased: bool = False
    # The data subject whose key seals a customer's address (None: under the deployment key).
    subject_id: str | None = None

    def expired(self, now: datetime) -> bool:
        return rules.is_expired(self.expires_at, now)


class AliasStore:
    def __init__(
        self,
        db: Database,
        cipher: AddressCipher,
        *,
        domain: str,
        ttl_days: int,
        clock: Clock,
        dialect: Dialect,
        cache_size: int = 0,
        grace_days: int = 7,
        subject_keys: SubjectKeys | None = None,
    ) -> None:
        # With subject keys, a customer's real address and name are sealed under their own key.
        self._sealing = AliasSealing(cipher, subject_keys)
        self._writer = AliasWriter(
            db, cipher, self._sealing, domain=domain, ttl_days=ttl_days, clock=clock
        )
        self._dialect = dialect
        self._windows = AliasWindows(db, dialect)
        self._erasure = AliasErasure(db, cipher, clock)
        self._grace_days = grace_days
        self._aliases = db["aliases"]
        self._keys = db["alias_keys"]
        self._stores = StoreSettings(db)
        self._cipher = cipher
        self._domain = domain
        self._ttl_days = ttl_days
        self._clock = clock
        # Per order: its customer and store aliases as last seen (empty: it had none yet).
        self._orders: TTLCache[str, OrderAliases] | None = None
        self._by_address: TTLCache[str, AliasRecord] | None = None
        self._policies: TTLCache[str, AliasExpiry] | None = None
        if cache_size:
            self._policies = TTLCache(cache_size, POLICY_TTL_S)
            self._orders = TTLCache(cache_size, CACHE_TTL_S)
            self._by_address = TTLCache(2 * cache_size, CACHE_TTL_S)

    async def lookup(self, alias: str) -> AliasRecord | None:
        """One indexed read by `_id`; expired aliases are returned too, the caller decides.

        An address not found is looked for once more under its keyed hash, where an erased
        customer's soft alias is kept (`erase_person`): that record says erased.
        """
        address = alias.strip().lower()
        if self._by_address is not None and address in self._by_address:
            return self._by_address[address]
        doc = await self._aliases.find_one({"_id": address})
        if doc is None:
            doc = await self._erasure.find(address)
        if doc is None:
            return None
        [record] = await self._windowed(await self._records([doc]))
        if self._by_address is not None and record.role is not ParticipantRole.EXTERNAL:
            self._by_address[address] = record
        return record

    async def of_order(self, order_id: str) -> list[AliasRecord]:
        """The order's customer and store aliases (reverse aliases are found by their sender)."""
        known = self._cached(order_id)
        if known is None or len(known) < len(ROLES):
            known = await self._read_order(order_id)
        return list(known.values())

    async def order_pair(
        self, order_id: str, store_id: str, customer: Party, store: Party
    ) -> tuple[AliasRecord, AliasRecord]:
        """The order's customer and store aliases, created on first use."""
        found = self._cached(order_id)
        if found is None:
            found = await self._read_order(order_id)
        anchor = found.get(ParticipantRole.CUSTOMER) or await self._create_anchor(
            order_id,
            store_id,
            customer,
            store,
            order_key(order_id, ParticipantRole.CUSTOMER),
        )
        store_alias = found.get(ParticipantRole.STORE) or await self._create_store_alias(
            anchor, store, order_key(order_id, ParticipantRole.STORE)
        )
        self._remember(
            order_id, {ParticipantRole.CUSTOMER: anchor, ParticipantRole.STORE: store_alias}
        )
        return anchor, store_alias

    async def prefetch(self, order_ids: Iterable[str]) -> None:
        """Remember these orders' customer and store aliases, read together (a poll's orders):
        one read per collection where `$in` is fast, instead of a round per order."""
        await self._orders_read_together(order_ids)

    async def _orders_read_together(self, order_ids: Iterable[str]) -> dict[str, OrderAliases]:
        """`prefetch`, returning every order asked, cached or read (empty: none yet)."""
        if self._orders is None:
            return {}  # nothing would remember them
        asked = list(order_ids)
        known = {o: a for o in asked if (a := self._orders.get(o)) is not None}
        wanted: dict[str, OrderAliases] = {o: {} for o in asked if o not in known}
        customer, store = ROLES
        # An order's store alias is made after its customer alias (its anchor), so only the
        # orders that have one can have the other: a new order costs one read, not two.
        for record in await self._by_keys(order_key(o, customer) for o in wanted):
            wanted[record.order_id][record.role] = record
        for record in await self._by_keys(order_key(o, store) for o, a in wanted.items() if a):
            wanted[record.order_id][record.role] = record
        for order_id, found in wanted.items():
            self._remember(order_id, found)
        return known | wanted

    async def prepare_orders(self, orders: Mapping[str, NewOrder]) -> None:
        """Remember these orders' aliases (`prefetch`) and create the pairs of the new ones
        together: for a poll's new orders, one unordered insert per collection (subject keys,
        aliases, claims) instead of two inserts per alias. The race rules are those of
        `order_pair`, per document; an order the batch cannot settle (an address taken, a claim
        another worker won) is left for `order_pair`, which reads the winner or tries again."""
        if self._orders is None:
            return
        found = await self._orders_read_together(orders)
        for store_id in {o.store_id for o in orders.values()}:
            await self._expiry_policy(store_id)  # once for the poll, not once per order
        new = {o: parties for o, parties in orders.items() if not found.get(o)}
        if not new:
            return
        settled = await self._writer.insert_pairs(new)
        for order_id, pair in settled.items():
            records = await self._records(pair)
            self._remember(order_id, {r.role: r for r in records})

    async def _read_order(self, order_id: str) -> OrderAliases:
        """The order's customer and store aliases, read by `_id`s and then remembered."""
        keys = [order_key(order_id, role) for role in ROLES]
        found = {record.role: record for record in await self._by_keys(keys)}
        self._remember(order_id, found)
        return found

    def _cached(self, order_id: str) -> OrderAliases | None:
        return None if self._orders is None else self._orders.get(order_id)

    def _remember(self, order_id: str, aliases: OrderAliases) -> None:
        if self._orders is None or self._by_address is None:
            return
        self._orders[order_id] = aliases
        for record in aliases.values():
            self._by_address[record.address] = record

    async def _by_keys(self, keys: Iterable[str]) -> list[AliasRecord]:
        claims = await self._dialect.find_each(self._keys, "_id", keys)
        docs = await self._dialect.find_each(self._aliases, "_id", [c["alias"] for c in claims])
        return await self._windowed(await self._records(docs))

    async def _expiry_policy(self, store_id: str) -> AliasExpiry:
        """The store's alias expiry policy; remembered POLICY_TTL_S when this store caches."""
        if self._policies is not None and store_id in self._policies:
            return self._policies[store_id]
        policy = (await self._stores.get(store_id)).alias_expiry
        if self._policies is not None:
            self._policies[store_id] = policy
        return policy

    async def _windowed(self, records: list[AliasRecord]) -> list[AliasRecord]:
        """The records with their order's window as their expiry, where the order has one."""
        windows = await self._windows.of_orders(r.order_id for r in records) if records else {}
        return [
            dataclasses.replace(r, expires_at=window.expires_at)
            if (window := windows.get(r.order_id)) is not None
            else r
            for r in records
        ]

    async def follow_status(
        self, order_id: str, store_id: str, *, terminal: bool, at: datetime
    ) -> AliasWindow | None:
        """Move the order's window on a status event, if its store's policy is orderFlow.

        Returns the window now in force (None: the store's policy is fixed).
        """
        if await self._expiry_policy(store_id) is not AliasExpiry.ORDER_FLOW:
            return None
        previous = await self._windows.get(order_id)
        window = rules.next_window(
            previous, terminal=terminal, at=at, ttl_days=self._ttl_days, grace_days=self._grace_days
        )
        if window is None:
            return previous
        await self._windows.put(order_id, store_id, window)
        known = self._cached(order_id)
        if known:  # this worker sees its own move at once, without reading the order again
            self._remember(
                order_id,
                {k: dataclasses.replace(r, expires_at=window.expires_at) for k, r in known.items()},
            )
        return window

    async def reverse_alias(self, order_id: str, sender: Party) -> AliasRecord:
        """The alias an external party (carrier, marketplace) of this order writes through."""
        anchor = await self._anchor(order_id)
        key = order_key(
            order_id, ParticipantRole.EXTERNAL, self._cipher.address_hash(sender.address)
        )
        existing = await self._by_keys([key])
        if existing:
            return existing[0]
        return await self._insert(NewAlias(
            lambda: rules.new_reverse_alias(
                anchor.mask, sender.address, anchor.token, self._domain
            ),
            order_id=order_id,
            store_id=anchor.store_id,
            role=ParticipantRole.EXTERNAL,
            mask=anchor.mask,
            token=anchor.token,
            party=sender,
            key=key,
        ))  # fmt: skip

    async def _anchor(self, order_id: str) -> AliasRecord:
        customer = ParticipantRole.CUSTOMER
        anchor = next((r for r in await self.of_order(order_id) if r.role is customer), None)
        if anchor is None:
            raise LookupError(f"order {order_id} has no aliases")
        return anchor

    async def _create_anchor(
        self, order_id: str, store_id: str, customer: Party, store: Party, key: str
    ) -> AliasRecord:
        mask = (await self._stores.get(store_id)).mask
        plan = rules.choose_order_aliases(mask, customer.address, store.address, self._domain)
        if plan.fell_back:
            log.warning("soft_alias_fell_back_to_hard", order_id=order_id, store_id=store_id)
        first = [plan.customer_alias]
        return await self._insert(NewAlias(
            lambda: first.pop() if first else rules.new_hard_alias(self._domain),
            order_id=order_id,
            store_id=store_id,
            role=ParticipantRole.CUSTOMER,
            mask=plan.mask,
            token=plan.token,
            party=customer,
            key=key,
        ))  # fmt: skip

    async def _create_store_alias(self, anchor: AliasRecord, store: Party, key: str) -> AliasRecord:
        def candidate() -> str:
            if anchor.mask == MaskType.SOFT and anchor.token:
                soft = rules.soft_alias(store.address, anchor.token, self._domain)
                if soft and soft != anchor.address:
                    return soft
            return rules.new_hard_alias(self._domain)

        return await self._insert(NewAlias(
            candidate,
            order_id=anchor.order_id,
            store_id=anchor.store_id,
            role=ParticipantRole.STORE,
            mask=anchor.mask,
            token=anchor.token,
            party=store,
            key=key,
        ))  # fmt: skip

    async def _insert(self, alias: NewAlias) -> AliasRecord:
        """Insert a new alias; a lost race returns the winner, an address collision retries."""
        doc = await self._writer.insert(alias)
        if doc is None:  # another worker claimed this order and role first: theirs is the alias
            winner = await self._by_keys([alias.key])
            if not winner:
                raise LookupError(f"the claim of {alias.order_id}'s alias vanished while read")
            return winner[0]
        return (await self._windowed(await self._records([doc])))[0]

    def address_hash(self, address: str) -> str:
        """A keyed fingerprint of any address, safe to show where the address itself is not."""
        return self._cipher.address_hash(address)

    def audit_name(self, alias: str) -> str:
        """An alias as an audit entry names it: a hard alias as it is; anything else (a soft
        alias is a readable address, and what was typed may be one) by its keyed hash, so an
        erasure leaves no address in the audit log, whose entries are never rewritten."""
        address = alias.strip().lower()
        if mask_of(address, self._domain) is MaskType.HARD:
            return address
        return f"hash:{self._cipher.address_hash(address)}"

    async def reencrypt_all(self) -> tuple[int, int]:
        """Re-encrypt every alias's address under the current key; returns (seen, rewritten).

        Hashes and reverse aliases' claims are derived from the key too, so they are rewritten
        with it and an external party keeps its reverse alias after the rotation.
        """
        seen = rewritten = 0
        async for doc in self._aliases.find({}):
            seen += 1
            if doc.get("realEnc") is not None and self._cipher.needs_reencrypt(
                bytes(doc["realEnc"])
            ):
                await self._reencrypt(doc)
                rewritten += 1
                if rewritten % 500 == 0:
                    await asyncio.sleep(0)
        if self._orders is not None and self._by_address is not None:
            self._orders.clear()
            self._by_address.clear()
        return seen, rewritten

    async def _reencrypt(self, doc: Document) -> None:
        real = self._cipher.decrypt(bytes(doc["realEnc"]), doc["_id"])
        real_hash = self._cipher.address_hash(real)
        update: Document = {
            "realEnc": Binary(self._cipher.encrypt(real, doc["_id"])),
            "realHash": real_hash,
        }
        if doc["role"] == ParticipantRole.EXTERNAL.value:
            # The claim moves to the key's new hash: insert the new one before deleting the old,
            # so that a crash in between leaves the alias findable under one or the other.
            new_key = order_key(doc["orderId"], ParticipantRole.EXTERNAL, real_hash)
            with contextlib.suppress(DuplicateKeyError):
                await self._keys.insert_one(
                    {"_id": new_key, "alias": doc["_id"], "orderId": doc["orderId"]}
                )
            await self._keys.delete_one({"_id": doc["orderKey"]})
            update["orderKey"] = new_key
        await self._aliases.update_one({"_id": doc["_id"]}, {"$set": update})

    async def _records(self, docs: Iterable[Document]) -> list[AliasRecord]:
        """Records of these documents, each opened with its subject's key where it has one."""
        docs = list(docs)
        keys = await self._sealing.keys(docs)
        return [self._record(doc, keys) for doc in docs]

    def _record(self, doc: Document, keys: Keys) -> AliasRecord:
        party = self._sealing.opened(doc, keys)
        return AliasRecord(
            address=doc["_id"],
            order_id=doc["orderId"],
            store_id=doc["storeId"],
            role=ParticipantRole(doc["role"]),
            mask=MaskType(doc["mask"]),
            token=doc.get("token"),
            real_address=party.real_address,
            real_hash=doc["realHash"],
            name=party.name,
            created_at=doc["createdAt"],
            expires_at=doc["expiresAt"],
            erased=party.erased,
            subject_id=doc.get("subjectId"),
        )

    async def of_person(self, address: str) -> list[AliasRecord]:
        """Every alias whose real address is `address` (any order, any role), by its keyed hash:
        a scan, for the rare data-subject requests only."""
        docs = self._aliases.find({"realHash": self._cipher.address_hash(address)})
        return await self._windowed(await self._records([doc async for doc in docs]))

    async def latest_customer_alias(self) -> dict[str, datetime]:
        """Per customer address hash, when their newest order's alias was made (one scan)."""
        latest: dict[str, datetime] = {}
        query = {"role": ParticipantRole.CUSTOMER.value, "erasedAt": None}
        async for doc in self._aliases.find(query, {"realHash": 1, "createdAt": 1}):
            known = latest.get(doc["realHash"])
            latest[doc["realHash"]] = max(known, doc["createdAt"]) if known else doc["createdAt"]
        return latest

    async def erase_person(self, address: str) -> list[str]:
        """Remove the real address and name from each of the person's aliases; the aliases stay
        (so mail to them is refused, not unknown; a soft customer alias under its keyed hash,
        adapters/alias_erasure.py) and the order ids are returned."""
        orders = await self._erasure.erase(self._cipher.address_hash(address))
        if self._orders is not None and self._by_address is not None:
            self._orders.clear()
            self._by_address.clear()
        return orders
