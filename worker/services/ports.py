"""What the services need of the outside world, as Protocols: the adapters satisfy them in the
workers, and the in-memory implementations of tests/memory/ in `make test-unit`.

Each port names only the calls a service makes, so that a second implementation stays small and
a service's dependencies can be read here. The record types (AliasRecord, Delivery, Suppression,
SentMessage, PreparedMessage) are the adapters' and the domain's own: both implementations
return the same values.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Protocol

from worker.adapters.alias_store import AliasRecord
from worker.adapters.alias_writes import NewOrder
from worker.adapters.deliveries import Delivery
from worker.adapters.kafka import Record
from worker.adapters.messages import SealedMessage
from worker.adapters.smtp import PreparedMessage
from worker.adapters.suppressions import Suppression
from worker.domain.aliases import AliasWindow, Party
from worker.domain.bounces import SentMessage


class Aliases(Protocol):
    """The aliases of orders (adapters.alias_store.AliasStore)."""

    async def lookup(self, alias: str) -> AliasRecord | None: ...

    async def of_order(self, order_id: str) -> list[AliasRecord]: ...

    async def order_pair(
        self, order_id: str, store_id: str, customer: Party, store: Party
    ) -> tuple[AliasRecord, AliasRecord]: ...

    async def prefetch(self, order_ids: Iterable[str]) -> None: ...

    async def prepare_orders(self, orders: Mapping[str, NewOrder]) -> None: ...

    async def reverse_alias(self, order_id: str, sender: Party) -> AliasRecord: ...

    async def follow_status(
        self, order_id: str, store_id: str, *, terminal: bool, at: datetime
    ) -> AliasWindow | None: ...

    def address_hash(self, address: str) -> str: ...


class Messages(Protocol):
    """Whole messages as sent, and what a bounce of one needs (adapters.messages.MessageStore)."""

    async def keep(
        self,
        *,
        event_id: str,
        order_id: str,
        store_id: str,
        raw: bytes,
        sent: SentMessage | None = None,
        subject_id: str | None = None,
    ) -> bool: ...

    async def seal(
        self,
        *,
        event_id: str,
        order_id: str,
        store_id: str,
        raw: bytes,
        sent: SentMessage | None = None,
        subject_id: str | None = None,
    ) -> SealedMessage: ...

    async def sent(self, event_id: str) -> SentMessage | None: ...


class Ledger(Protocol):
    """The notifier's outcome per event id (adapters.deliveries.DeliveryLedger)."""

    async def find_many(self, event_ids: list[str]) -> dict[str, Delivery]: ...

    async def record(self, delivery: Delivery) -> Delivery: ...

    async def record_sent(self, delivery: Delivery, message: SealedMessage) -> Delivery: ...


class SuppressionRecords(Protocol):
    """Hard-bounced addresses by order and store (adapters.suppressions.Suppressions)."""

    async def suppress(
        self,
        *,
        order_id: str,
        store_id: str,
        address_hash: str,
        status: str,
        cause_event_id: str,
        at: datetime,
    ) -> None: ...

    async def active(
        self, order_id: str, store_id: str, address_hash: str, *, every: bool = False
    ) -> list[Suppression]: ...

    async def active_many(
        self, customers: Sequence[tuple[str, str, str]]
    ) -> list[list[Suppression]]: ...

    async def lift(self, order_id: str, store_id: str, address_hash: str) -> list[Suppression]: ...


class Upstream(Protocol):
    """The SMTP upstream (adapters.smtp.SmtpPool); both raise SmtpFailure when it refuses."""

    async def send(self, message: bytes, *, sender: str, recipients: list[str]) -> str: ...

    def prepare(
        self, message: bytes, *, sender: str, recipient: str
    ) -> AbstractAsyncContextManager[PreparedMessage]: ...


class Producer(Protocol):
    """A Kafka producer (aiokafka's AIOKafkaProducer): `send` returns the delivery's future."""

    async def send(
        self, topic: str, value: bytes | None = None, key: bytes | None = None
    ) -> asyncio.Future[Any]: ...

    async def send_and_wait(
        self, topic: str, value: bytes | None = None, key: bytes | None = None
    ) -> Any: ...


class DeadLetterSink(Protocol):
    """Where a record no handler can process goes, with its reason (adapters.dead_letters)."""

    async def publish(self, record: Record, reason: str) -> None: ...
