"""`ct run projector`: timeline events from Kafka into the MongoDB order documents."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Sequence

import structlog

from worker import metrics
from worker.adapters import mongo
from worker.adapters.dead_letters import DeadLetters
from worker.adapters.kafka import BatchConsumer, Record, consume, make_producer, require_topics
from worker.adapters.orders import OrdersRepository
from worker.codec import DecodeError, ValueCodec
from worker.config import Settings
from worker.events import TimelineEvent
from worker.retry import retry_transient
from worker.service import Service

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
                event = self._codec.decode(record.value, TimelineEvent)
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


class ProjectorService(Service):
    name = COMPONENT

    def __init__(self, settings: Settings, codec: ValueCodec) -> None:
        self._settings = settings
        self._codec = codec
        self._consumer: BatchConsumer | None = None

    def is_ready(self) -> bool:
        return self._consumer is not None and self._consumer.ready

    async def run(self, stopping: asyncio.Event) -> None:
        settings = self._settings
        client = mongo.connect(settings, app_name="ct-projector")
        producer = make_producer(settings, "ct-projector-dlq")
        try:
            db = client[settings.mongo_db]
            dialect = await mongo.prepare(db, settings.mongo_dialect)
            await producer.start()
            # Its consumer checks the timeline topic; the dead letters go here.
            await require_topics(settings, [settings.topic_dlq])
            orders = OrdersRepository(db, dialect=dialect, cache_size=settings.projector_cache_size)
            projector = Projector(
                self._codec,
                orders,
                DeadLetters(producer, settings.topic_dlq, COMPONENT, settings.retry_max_delay_s),
                settings.retry_max_delay_s,
            )
            self._consumer = consume(
                settings,
                settings.topic_timeline,
                settings.group_projector,
                projector.handle,
                name=COMPONENT,
                # Another projector may have written these orders while it owned the partitions.
                on_assigned=orders.forget,
            )
            await self._consumer.run(stopping)
        finally:
            await producer.stop()
            await client.close()
