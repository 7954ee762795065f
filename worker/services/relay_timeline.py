"""What the relay writes to the timeline: each event sealed, published, and refusals bounded.

Every timeline event of the relay (a forward, a refusal, a bounce's report) passes through
`publish`: its personal fields are sealed under the customer's subject key first, then Kafka
must acknowledge it within `KAFKA_TIMEOUT_S`, or the sender is answered 4xx (`Transient`). A
producer that can never send again sets `broken`, which stops the relay. Refusals are listed on
the order at most a few an hour (`RejectionBudget`); the rest are counted on the last one listed
(it is published again with `folded_refusals`, which the projector merges into that entry), so
senders that cycle through addresses cannot grow a timeline without bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

from worker.adapters import mongo
from worker.adapters.kafka import PRODUCER_BROKEN
from worker.adapters.kafka import is_transient as kafka_transient
from worker.contracts.codec import ValueCodec
from worker.contracts.events import ParticipantRole, TimelineEvent
from worker.core import metrics
from worker.domain import relay_events
from worker.domain.aliases import Clock
from worker.domain.personal import is_erased
from worker.domain.replies import TEMPORARY_FAILURE, UNKNOWN_ALIAS
from worker.domain.routing import AliasView, OrderParties
from worker.services.durable import Transient
from worker.services.ports import Aliases, Producer
from worker.services.subjects import Subjects

log = structlog.get_logger(__name__)
KAFKA_TIMEOUT_S = 20.0
T = TypeVar("T")


class Closed(Exception):
    """The conversation is closed for this sender or recipient: answer `reply` (a 5xx)."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


async def transient_if_down(operation: Callable[[], Awaitable[T]]) -> T:
    """A MongoDB operation whose transient failure becomes the sender's 4xx."""
    try:
        return await operation()
    except Exception as exc:
        if mongo.is_transient(exc):
            raise Transient(TEMPORARY_FAILURE) from exc
        raise


class RelayTimeline:
    def __init__(
        self,
        *,
        producer: Producer,
        codec: ValueCodec,
        topic: str,
        aliases: Aliases,
        clock: Clock,
        subjects: Subjects | None,
        broken: asyncio.Event,
    ) -> None:
        self._producer = producer
        self._codec = codec
        self._topic = topic
        self._aliases = aliases
        self._clock = clock
        # None only in tests of other concerns: nothing is sealed.
        self._subjects = subjects
        self._broken = broken
        self._rejections = relay_events.RejectionBudget()

    async def seal(self, event: TimelineEvent) -> TimelineEvent:
        subjects = self._subjects
        return event if subjects is None else await transient_if_down(lambda: subjects.seal(event))

    async def seal_forward(self, event: TimelineEvent) -> TimelineEvent:
        """The forward's event sealed; `Closed` if its customer was erased meanwhile."""
        event = await self.seal(event)
        if is_erased(event):  # erased since this relay cached the order's aliases
            metrics.MESSAGES_REJECTED.labels(reason="erased").inc()
            raise Closed(UNKNOWN_ALIAS)
        return event

    async def publish(self, event: TimelineEvent) -> None:
        event = await self.seal(event)
        try:
            async with asyncio.timeout(KAFKA_TIMEOUT_S):
                await self._producer.send_and_wait(
                    self._topic, key=event.order_id.encode(), value=self._codec.encode(event)
                )
        except Exception as exc:
            if isinstance(exc, PRODUCER_BROKEN):
                self._broken.set()
            if kafka_transient(exc) or isinstance(exc, PRODUCER_BROKEN):
                raise Transient(TEMPORARY_FAILURE) from exc
            raise

    async def record_rejection(
        self,
        alias: AliasView,
        parties: OrderParties,
        mail_from: str,
        reason: str,
        *,
        cause: str | None = None,
        participant: bool = True,
    ) -> None:
        """MESSAGE_REJECTED on the alias's order; best effort, the refusal stands anyway.

        `participant` False: the sender failed authentication, so the entry never names the
        customer or store it claimed to be (an external party of the order is still named).
        """
        address = mail_from.strip("<>")
        sender = parties.by_address(address)
        if not participant and sender is not None and sender.role is not ParticipantRole.EXTERNAL:
            sender = None
        now = self._clock.now()  # one moment for the event's id and the budget's window
        event = relay_events.rejected(
            alias,
            sender,
            sender_key=self._aliases.address_hash(cause or address),
            reason=reason,
            at=now,
        )
        admission = self._rejections.admit(event, now=now)
        if admission.folded:
            # Counted on the last entry listed: that entry again (sealed already), with the count.
            metrics.MESSAGES_REJECTED.labels(reason="not_listed").inc()
            log.info(
                "rejection_folded",
                order_id=alias.order_id,
                into=admission.event.event_id,
                folded=admission.event.folded_refusals,
            )
        try:
            event = await self.seal(admission.event)
            if not admission.folded:
                # A count folded into it later re-sends these very bytes, with no other lookup.
                self._rejections.sealed(event, now=now)
            await self.publish(event)
        except Transient:
            log.warning("rejection_not_recorded", alias=alias.address)
