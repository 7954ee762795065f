"""Data subjects: the one boundary where personal data is sealed, opened and erased.

Producers call `seal` on each timeline event just before it is written anywhere (the ledger, the
message store, Kafka): the event's personal fields are sealed under the key of the order's
customer (worker/domain/personal.py says which fields), so the projector, the topic and every
copy of it hold ciphertext only. Readers call `open`. Erasure (services/subject_requests.py)
destroys the subject's key, so what was sealed under it becomes unreadable wherever it is, on
Kafka's log too; events of an erased customer's orders are then written with nothing personal.
A customer erased and back with a new order is a new subject. `DeadLetterSeal` does the same
for the notifier's dead letters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from worker.adapters.alias_store import AliasRecord, AliasStore
from worker.adapters.dead_letters import DeadLetter, Headers
from worker.adapters.kafka import Record
from worker.adapters.subject_keys import SubjectKeys
from worker.contracts.codec import DecodeError, ValueCodec
from worker.contracts.events import OrderStatusChanged, ParticipantRole, TimelineEvent
from worker.core.crypto import SubjectKey
from worker.domain.aliases import MaskType
from worker.domain.personal import ERASED_SUBJECT, open_event, redact_event, seal_event

SUBJECT_HEADER: Final = "ct.sealed-subject"
UNATTRIBUTED: Final = "-"  # sealed under the deployment key: whose it is cannot be told
_DEAD_LETTER: Final = "dead-letter"


Seal = Callable[[TimelineEvent], TimelineEvent]


class NoCustomer(LookupError):
    """An event of an order without a customer alias: there is nobody to seal it for."""


class Subjects:
    def __init__(self, keys: SubjectKeys, aliases: AliasStore) -> None:
        self.keys = keys
        self._aliases = aliases

    async def seal(self, event: TimelineEvent) -> TimelineEvent:
        """The event with its personal fields sealed under its order's customer's key; with
        nothing personal at all once that customer was erased. Idempotent."""
        if event.subject_id is not None:
            return event
        return (await self.sealer(event.order_id))(event)

    async def sealer(self, order_id: str) -> Seal:
        """What seals this order's events, without another lookup: under its customer's key, or
        to nothing personal once they were erased. On a soft-masked order the customer's alias
        holds their address, so it is sealed (or erased) with the rest."""
        customer = await self._customer(order_id)
        soft = customer.mask is MaskType.SOFT
        key = await self._key_of(customer)
        if key is None:
            return lambda event: redact_event(event, alias=soft)
        return lambda event: seal_event(event, key, alias=soft)

    async def subject_of(self, order_id: str) -> SubjectKey | None:
        """The key of the order's customer; None once they were erased."""
        return await self._key_of(await self._customer(order_id))

    async def _key_of(self, customer: AliasRecord) -> SubjectKey | None:
        if customer.erased or not customer.real_address:
            return None
        if customer.subject_id:  # the key that sealed the alias, read with it (cached)
            return await self.keys.key(customer.subject_id)
        return await self.keys.for_address(customer.real_address, since=customer.created_at)

    async def open(self, events: list[TimelineEvent]) -> list[TimelineEvent]:
        """The events as written; an erased subject's fields read `erased`."""
        keys = await self.keys.keys(
            {e.subject_id for e in events if e.subject_id and e.subject_id != ERASED_SUBJECT}
        )
        return [open_event(e, keys.get(e.subject_id or "")) for e in events]

    async def _customer(self, order_id: str) -> AliasRecord:
        for record in await self._aliases.of_order(order_id):
            if record.role is ParticipantRole.CUSTOMER:
                return record
        raise NoCustomer(f"order {order_id!r} has no customer alias to seal its events for")


class DeadLetterSeal:
    """Seals a dead letter's value before it reaches the DLQ, and opens it for a replay.

    An order-status event is sealed under its customer's subject key (erasure makes the dead
    letter unreadable and `ct dlq replay` skips it); a value that does not decode may hold
    anything and is sealed under the deployment key; a timeline event is sealed already.
    """

    def __init__(self, codec: ValueCodec, keys: SubjectKeys) -> None:
        self._codec = codec
        self._keys = keys

    async def seal(self, record: Record) -> tuple[bytes, Headers]:
        value = record.value or b""
        try:
            event = await self._codec.read(value, record.headers or (), OrderStatusChanged)
        except DecodeError:
            if await self._is_timeline(record):
                return value, []
            return self._keys.seal_unattributed(value), [(SUBJECT_HEADER, UNATTRIBUTED.encode())]
        key = await self._keys.for_address(event.customer.email, since=event.occurred_at)
        if key is None:  # the customer was erased: whose it is must not be kept either
            return self._keys.seal_unattributed(value), [(SUBJECT_HEADER, UNATTRIBUTED.encode())]
        sealed = key.seal_bytes(value, _DEAD_LETTER)
        return sealed, [(SUBJECT_HEADER, key.subject_id.encode())]

    async def open(self, letter: DeadLetter) -> bytes | None:
        headers = dict(letter.record.headers or ())
        subject = headers.get(SUBJECT_HEADER)
        value = letter.record.value or b""
        if subject is None:
            return value  # not sealed: dead-lettered before sealing, or a timeline event
        if subject.decode() == UNATTRIBUTED:
            return self._keys.open_unattributed(value)
        key = await self._keys.key(subject.decode())
        return None if key is None else key.open_bytes(value, _DEAD_LETTER)

    async def _is_timeline(self, record: Record) -> bool:
        try:
            await self._codec.read(record.value, record.headers or (), TimelineEvent)
        except DecodeError:
            return False
        return True
