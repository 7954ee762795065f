"""`ct run projector`: timeline events from Kafka into the MongoDB order documents."""

from __future__ import annotations

import asyncio

import structlog

from worker.adapters import mongo
from worker.adapters.batch_consumer import BatchConsumer, consume
from worker.adapters.dead_letters import DeadLetters
from worker.adapters.kafka import make_producer, require_topics
from worker.adapters.orders import OrdersRepository
from worker.contracts.codec import ValueCodec
from worker.core.config import Settings
from worker.core.service import Service
from worker.services.projection import COMPONENT, Projector

log = structlog.get_logger(__name__)


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
            orders = OrdersRepository(
                db,
                dialect=dialect,
                cache_size=settings.projector_cache_size,
                max_document_bytes=settings.projector_max_document_bytes,
            )
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
