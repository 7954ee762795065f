"""`ct run projector`: timeline events from Kafka into the MongoDB order documents."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence

import structlog

from worker.adapters import mongo
from worker.adapters.dead_letters import DeadLetters
from worker.adapters.kafka import Record
from worker.adapters.orders import OrdersRepository
from worker.contracts.codec import DecodeError, ValueCodec
from worker.contracts.events import TimelineEvent
from worker.core import metrics
from worker.core.retry import retry_transient

log = structlog.get_logger(__name__)
COMPONENT = "projector"


class Projector:
    """Decodes a batch, dead-letters what cannot be read, and merges the rest in one bulk_write."""

    def __init__(
        self,
        codec: ValueCodec,
        orders: OrdersRepository,
        dead_letters: DeadLetters,
        max_delay: float,
    ) -> None:
        self._codec = codec
        self._orders = orders
        self._dead_letters = dead_letters
        self._max_delay = max_delay

    async def handle(self, records: Sequence[Record]) -> None:
        started = time.perf_counter()
        by_order: dict[str, list[TimelineEvent]] = defaultdict(list)
        rejected = 0
        for record in records:
            try:
                event = await self._codec.read(record.value, record.headers, TimelineEvent)
            except DecodeError as exc:
                rejected += 1
                await self._dead_letters.publish(record, exc.reason)
                continue
            by_order[event.order_id].append(event)
        added = await retry_transient(
            lambda: self._orders.project(by_order),
            name="mongo.project",
            is_transient=mongo.is_transient,
            max_delay=self._max_delay,
        )
        metrics.TIMELINE_WRITES.inc(added)
        metrics.EVENTS_CONSUMED.labels(consumer=COMPONENT, outcome="projected").inc(
            len(records) - rejected
        )
        metrics.EVENTS_CONSUMED.labels(consumer=COMPONENT, outcome="dead_lettered").inc(rejected)
        log.info(
            "batch_projected",
            records=len(records),
            orders=len(by_order),
            entries_added=added,
            duplicates=len(records) - rejected - added,
            dead_lettered=rejected,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )
