"""The MongoDB-backed ports in memory: aliases, messages, the delivery ledger, suppressions."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from worker.adapters.alias_store import AliasRecord
from worker.adapters.alias_writes import NewOrder
from worker.adapters.deliveries import Delivery
from worker.adapters.messages import SealedMessage
from worker.adapters.suppressions import Scope, Suppression
from worker.contracts.events import ParticipantRole
from worker.domain.aliases import AliasWindow, Clock, MaskType, Party, SystemClock
from worker.domain.bounces import SentMessage


class MemoryAliases:
    """Hard-masked aliases only (the default mask), on the `fixed` expiry policy."""

    def __init__(self, clock: Clock, *, domain: str = "ct.example.com", ttl_days: int = 60) -> None:
        self._clock = clock
        self._domain = domain
        self._ttl = timedelta(days=ttl_days)
        self._by_address: dict[str, AliasRecord] = {}
        self._by_key: dict[tuple[str, ...], AliasRecord] = {}

    async def lookup(self, alias: str) -> AliasRecord | None:
        return self._by_address.get(alias.strip().lower())

    async def of_order(self, order_id: str) -> list[AliasRecord]:
        return [
            r
            for key, r in self._by_key.items()
            if key[0] == order_id and r.role is not ParticipantRole.EXTERNAL
        ]

    async def order_pair(
        self, order_id: str, store_id: str, customer: Party, store: Party
    ) -> tuple[AliasRecord, AliasRecord]:
        return (
            self._get_or_create(order_id, store_id, ParticipantRole.CUSTOMER, customer),
            self._get_or_create(order_id, store_id, ParticipantRole.STORE, store),
        )

    async def reverse_alias(self, order_id: str, sender: Party) -> AliasRecord:
        [anchor] = [r for r in await self.of_order(order_id) if r.role is ParticipantRole.CUSTOMER]
        return self._get_or_create(
            order_id, anchor.store_id, ParticipantRole.EXTERNAL, sender,
            self.address_hash(sender.address),
        )  # fmt: skip

    async def prefetch(self, order_ids: Iterable[str]) -> None:
        return None  # everything is in memory already

    async def prepare_orders(self, orders: Mapping[str, NewOrder]) -> None:
        for order_id, parties in orders.items():
            await self.order_pair(order_id, parties.store_id, parties.customer, parties.store)

    async def follow_status(
        self, order_id: str, store_id: str, *, terminal: bool, at: datetime
    ) -> AliasWindow | None:
        return None  # the fixed policy: status events move no window

    def address_hash(self, address: str) -> str:
        key = b"memory-aliases"
        return hmac.new(key, address.strip().lower().encode(), hashlib.sha256).hexdigest()

    def _get_or_create(
        self, order_id: str, store_id: str, role: ParticipantRole, party: Party, *extra: str
    ) -> AliasRecord:
        key = (order_id, role.value, *extra)
        if key not in self._by_key:
            now = self._clock.now()
            record = AliasRecord(
                address=f"{uuid.uuid4().hex}@{self._domain}", order_id=order_id,
                store_id=store_id, role=role, mask=MaskType.HARD, token=None,
                real_address=party.address.lower(), real_hash=self.address_hash(party.address),
                name=party.name, created_at=now, expires_at=now + self._ttl,
            )  # fmt: skip
            self._by_key[key] = record
            self._by_address[record.address] = record
        return self._by_key[key]


@dataclass
class Kept:
    raw: bytes
    order_id: str
    sent: SentMessage | None
    subject_id: str | None = None  # whose key would seal it (MessageStore seals; memory keeps)


class MemoryMessages:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.kept: dict[str, Kept] = {}
        self.failures: deque[Exception] = deque()  # raised by the next keeps, one each

    async def keep(
        self,
        *,
        event_id: str,
        order_id: str,
        store_id: str,
        raw: bytes,
        sent: SentMessage | None = None,
        subject_id: str | None = None,
    ) -> bool:
        sealed = await self.seal(
            event_id=event_id,
            order_id=order_id,
            store_id=store_id,
            raw=raw,
            sent=sent,
            subject_id=subject_id,
        )
        return self.insert(sealed)

    async def seal(
        self,
        *,
        event_id: str,
        order_id: str,
        store_id: str,
        raw: bytes,
        sent: SentMessage | None = None,
        subject_id: str | None = None,
    ) -> SealedMessage:
        if self.failures:
            raise self.failures.popleft()
        doc = {"_id": event_id, "orderId": order_id, "sent": sent, "subjectId": subject_id}
        return SealedMessage(doc, raw)  # kept as it is: MessageStore seals, memory keeps

    def insert(self, message: SealedMessage) -> bool:
        """Keep it once (MessageStore.insert); False when this id was kept already."""
        doc = message.doc
        if doc["_id"] in self.kept:
            return False
        self.kept[doc["_id"]] = Kept(message.sealed, doc["orderId"], doc["sent"], doc["subjectId"])
        return True

    async def sent(self, event_id: str) -> SentMessage | None:
        kept = self.kept.get(event_id)
        if kept is None or kept.sent is None or kept.sent.expires_at <= self._clock.now():
            return None
        return kept.sent


@dataclass
class MemoryLedger:
    """Outcomes by event id; an email's is kept with its message, as DeliveryLedger keeps it."""

    messages: MemoryMessages = field(default_factory=lambda: MemoryMessages(SystemClock()))
    outcomes: dict[str, Delivery] = field(default_factory=dict)
    writes: int = 0  # what the database would be written: one per outcome

    async def find_many(self, event_ids: Sequence[str]) -> dict[str, Delivery]:
        return {e: self.outcomes[e] for e in event_ids if e in self.outcomes}

    async def record(self, delivery: Delivery) -> Delivery:
        if delivery.event_id not in self.outcomes:
            self.writes += 1
        return self.outcomes.setdefault(delivery.event_id, delivery)

    async def record_sent(self, delivery: Delivery, message: SealedMessage) -> Delivery:
        if self.messages.insert(message):
            self.writes += 1
            self.outcomes[delivery.event_id] = delivery
        return self.outcomes.setdefault(delivery.event_id, delivery)


class MemorySuppressions:
    """One record per scope, keyed as adapters/suppressions.py keys its documents."""

    def __init__(self, *, store_wide: bool) -> None:
        self._store_wide = store_wide
        self.records: dict[tuple[str, ...], Suppression] = {}

    def _keys(
        self, order_id: str, store_id: str, address_hash: str, *, every: bool
    ) -> list[tuple[str, ...]]:
        keys: list[tuple[str, ...]] = [("order", order_id)]
        if self._store_wide or every:
            keys.append(("store", store_id, address_hash))
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
        for key in self._keys(order_id, store_id, address_hash, every=False):
            scope: Scope = "store" if key[0] == "store" else "order"
            self.records.setdefault(
                key, Suppression(scope, order_id, store_id, status, cause_event_id, at)
            )

    async def active(
        self, order_id: str, store_id: str, address_hash: str, *, every: bool = False
    ) -> list[Suppression]:
        keys = self._keys(order_id, store_id, address_hash, every=every)
        return [self.records[k] for k in keys if k in self.records]

    async def active_many(
        self, customers: Sequence[tuple[str, str, str]]
    ) -> list[list[Suppression]]:
        return [await self.active(*customer) for customer in customers]

    async def lift(self, order_id: str, store_id: str, address_hash: str) -> list[Suppression]:
        lifted = await self.active(order_id, store_id, address_hash, every=True)
        for key in self._keys(order_id, store_id, address_hash, every=True):
            self.records.pop(key, None)
        return lifted
