"""`ct run notifier`: order-status events become emails sent through the order's masked aliases."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

import structlog
from aiokafka import AIOKafkaProducer

from worker import metrics
from worker.adapters import mongo
from worker.adapters.alias_store import AliasRecord, AliasStore
from worker.adapters.dead_letters import DeadLetters
from worker.adapters.deliveries import Delivery, DeliveryLedger
from worker.adapters.kafka import (
    PRODUCER_BROKEN,
    BatchConsumer,
    Record,
    consume,
    make_producer,
    require_topics,
)
from worker.adapters.kafka import is_transient as kafka_transient
from worker.adapters.kafka_client import PERMANENT_ERRORS
from worker.adapters.smtp import SmtpFailure, SmtpPool
from worker.adapters.smtp import is_transient as smtp_transient
from worker.apps.recorded_send import RecordedSender
from worker.codec import DecodeError, ValueCodec
from worker.config import ConfigError, Settings
from worker.crypto import AddressCipher
from worker.domain import notifications
from worker.domain.aliases import SystemClock
from worker.domain.errors import Unprocessable
from worker.domain.notifications import notification_parties
from worker.domain.templates import TemplateRenderer
from worker.events import OrderStatusChanged, TimelineEvent
from worker.retry import retry_transient
from worker.service import Service

log = structlog.get_logger(__name__)
COMPONENT = "notifier"
AliasPair = tuple[AliasRecord, AliasRecord]
T = TypeVar("T")
NOT_THIS_EVENTS_FAULT = (*PRODUCER_BROKEN, *PERMANENT_ERRORS, ConfigError)


class Notifier:
    """Per batch: orders run concurrently (bounded), each order's events strictly in order."""

    def __init__(
        self,
        *,
        codec: ValueCodec,
        aliases: AliasStore,
        ledger: DeliveryLedger,
        renderer: TemplateRenderer,
        sender: RecordedSender,
        producer: AIOKafkaProducer[bytes, bytes],
        dead_letters: DeadLetters,
        timeline_topic: str,
        domain: str,
        concurrency: int,
        max_delay: float,
    ) -> None:
        self._codec = codec
        self._aliases = aliases
        self._ledger = ledger
        self._renderer = renderer
        self._sender = sender
        self._producer = producer
        self._dead_letters = dead_letters
        self._timeline_topic = timeline_topic
        self._domain = domain
        self._slots = asyncio.Semaphore(concurrency)
        self._max_delay = max_delay

    async def handle(self, records: Sequence[Record]) -> None:
        by_order: dict[str, list[tuple[Record, OrderStatusChanged]]] = defaultdict(list)
        seen: set[str] = set()
        for record in records:
            try:
                event = self._codec.decode(record.value, OrderStatusChanged)
            except DecodeError as exc:
                await self._dead_letters.publish(record, exc.reason)
                continue
            # The same event twice in one batch (a producer retry): the first one covers both.
            if event.event_id not in seen:
                seen.add(event.event_id)
                by_order[event.order_id].append((record, event))
        await asyncio.gather(*(self._run_order(items) for items in by_order.values()))

    async def _run_order(self, items: list[tuple[Record, OrderStatusChanged]]) -> None:
        # Each order reads its own outcomes, so that no order waits for the whole batch's reads
        # before its first send.
        async with self._slots:
            done = await self._mongo(
                lambda: self._ledger.find_many([event.event_id for _, event in items]),
                "ledger.find_many",
            )
        pair: AliasPair | None = None
        for record, event in items:
            async with self._slots:
                pair = await self._process(record, event, done.get(event.event_id), pair)

    async def _process(
        self,
        record: Record,
        event: OrderStatusChanged,
        delivery: Delivery | None,
        pair: AliasPair | None,
    ) -> AliasPair | None:
        """Email one event (unless the ledger has its outcome) and publish its timeline events."""
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(order_id=event.order_id, event_id=event.event_id)
        started = time.perf_counter()
        try:
            outcome = "redelivered" if delivery else "sent"
            if delivery is None:
                delivery, pair = await self._deliver(event, pair)
                outcome = "sent" if delivery.sent else "failed"
            await self._publish([TimelineEvent.model_validate(r) for r in delivery.timeline])
        except Unprocessable as exc:
            outcome = "dead_lettered"
            await self._dead_letters.publish(record, str(exc))
        except NOT_THIS_EVENTS_FAULT:
            # A broken producer, a refused password, certificate or ACL: the process exits,
            # commits nothing past this event, and its restart (or the fix) sends it then.
            raise
        except Exception as exc:
            # A bug, not bad data: dead-letter the event (replayable once fixed) instead of
            # crash-looping on it. The reason names the error type only: messages may hold data.
            log.exception("event_failed")
            outcome = "dead_lettered"
            await self._dead_letters.publish(record, f"internal error: {type(exc).__name__}")
        metrics.EVENTS_CONSUMED.labels(consumer=COMPONENT, outcome=outcome).inc()
        log.info(
            "event_processed",
            status=event.status.value,
            outcome=outcome,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return pair

    async def _deliver(
        self, event: OrderStatusChanged, pair: AliasPair | None
    ) -> tuple[Delivery, AliasPair]:
        """Send the event's email and record its outcome; Unprocessable when it can have none."""
        rendered = self._renderer.render(event)
        customer, store = notification_parties(event)
        if pair is None:
            pair = await self._mongo(
                lambda: self._aliases.order_pair(event.order_id, event.store_id, customer, store),
                "aliases.order_pair",
            )
        customer_alias, store_alias = pair
        prepared = notifications.prepare(
            event,
            rendered,
            store_alias=store_alias.address,
            customer_alias=customer_alias.address,
            domain=self._domain,
        )
        try:
            delivery = await retry_transient(
                lambda: self._sender.send(
                    prepared.raw,
                    sender=prepared.store_alias,
                    recipient=customer.address,
                    record=lambda: self._record(prepared, failure=None),
                ),
                name="smtp.send",
                is_transient=smtp_transient,
                max_delay=self._max_delay,
            )
        except SmtpFailure as exc:
            metrics.EMAILS_FAILED.labels(kind="permanent").inc()
            return await self._record(prepared, failure=exc.reply), pair
        metrics.EMAILS_SENT.inc()
        return delivery, pair

    async def _record(
        self, prepared: notifications.PreparedNotification, *, failure: str | None
    ) -> Delivery:
        """The outcome in the ledger; a redelivered event finds it there and is not re-sent."""
        at = datetime.now(UTC)
        delivery = Delivery(
            event_id=prepared.event.event_id,
            order_id=prepared.event.order_id,
            sent=failure is None,
            at=at,
            timeline=[e.to_record() for e in prepared.timeline(at=at, failure=failure)],
        )
        return await self._mongo(lambda: self._ledger.record(delivery), "ledger.record")

    async def _publish(self, events: list[TimelineEvent]) -> None:
        async def send_all() -> None:
            futures = [
                await self._producer.send(
                    self._timeline_topic, key=e.order_id.encode(), value=self._codec.encode(e)
                )
                for e in events
            ]
            await asyncio.gather(*futures)

        await retry_transient(
            send_all, name="kafka.timeline", is_transient=kafka_transient, max_delay=self._max_delay
        )

    async def _mongo(self, operation: Callable[[], Awaitable[T]], name: str) -> T:
        return await retry_transient(
            operation,
            name=f"mongo.{name}",
            is_transient=mongo.is_transient,
            max_delay=self._max_delay,
        )


class NotifierService(Service):
    name = COMPONENT

    def __init__(self, settings: Settings, codec: ValueCodec, cipher: AddressCipher) -> None:
        self._settings = settings
        self._codec = codec
        self._cipher = cipher
        self._consumer: BatchConsumer | None = None

    def is_ready(self) -> bool:
        return self._consumer is not None and self._consumer.ready

    async def run(self, stopping: asyncio.Event) -> None:
        settings = self._settings
        client = mongo.connect(settings, app_name="ct-notifier")
        producer = make_producer(settings, "ct-notifier")
        smtp = SmtpPool.from_settings(settings)
        try:
            db = client[settings.mongo_db]
            dialect = await mongo.prepare(db, settings.mongo_dialect)
            await producer.start()
            # Refused settings stop the worker now, before it takes a single event.
            await require_topics(settings, [settings.topic_timeline, settings.topic_dlq])
            await smtp.check()
            notifier = Notifier(
                codec=self._codec,
                aliases=AliasStore(
                    db,
                    self._cipher,
                    domain=settings.domain,
                    ttl_days=settings.alias_ttl_days,
                    clock=SystemClock(),
                    dialect=dialect,
                    cache_size=settings.alias_cache_size,
                ),
                ledger=DeliveryLedger(db, dialect=dialect),
                renderer=TemplateRenderer(settings.templates_dir),
                sender=RecordedSender(smtp, max_unrecorded=settings.notifier_max_unrecorded),
                producer=producer,
                dead_letters=DeadLetters(
                    producer, settings.topic_dlq, COMPONENT, settings.retry_max_delay_s
                ),
                timeline_topic=settings.topic_timeline,
                domain=settings.domain,
                concurrency=settings.notifier_concurrency,
                max_delay=settings.retry_max_delay_s,
            )
            self._consumer = consume(
                settings,
                settings.topic_order_status,
                settings.group_notifier,
                notifier.handle,
                name=COMPONENT,
            )
            await self._consumer.run(stopping)
        finally:
            await smtp.close()
            await producer.stop()
            await client.close()
