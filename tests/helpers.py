"""Builders and runners shared by the integration tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import SecretStr

from worker.adapters.kafka_client import client_options
from worker.apps.runtime import Service
from worker.codec import SingleObjectCodec
from worker.config import Settings
from worker.events import (
    ConversationMessage,
    Customer,
    Direction,
    Item,
    OrderStatus,
    OrderStatusChanged,
    Participant,
    ParticipantRole,
    Store,
    TimelineEvent,
    TimelineKind,
)

CODEC = SingleObjectCodec()
T0 = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)


def order_event(
    order_id: str,
    status: OrderStatus = OrderStatus.PAYMENT_APPROVED,
    *,
    store_id: str = "store-1",
    event_id: str | None = None,
    at: datetime | None = None,
    customer_email: str = "jane.roe@example.org",
    store_email: str = "orders@shop.example.com",
    locale: str | None = "en",
    first_name: str = "Jane",
    **extra: Any,
) -> OrderStatusChanged:
    defaults: dict[str, Any] = {
        "total_value": 123456,
        "currency": "USD" if locale != "pt-BR" else "BRL",
        "items": [Item(name="Blue mug", quantity=2)],
    }
    if status == OrderStatus.INVOICED:
        defaults |= {
            "invoice_number": "NF-000123",
            "invoice_url": "https://shop.example.com/inv/123",
        }
    if status == OrderStatus.SHIPPED:
        defaults |= {
            "tracking_carrier": "Correios",
            "tracking_code": "BR123456789XX",
            "tracking_url": "https://track.example.com/BR123456789XX",
        }
    return OrderStatusChanged(
        event_id=event_id or str(uuid.uuid4()),
        order_id=order_id,
        store_id=store_id,
        occurred_at=at or T0,
        status=status,
        customer=Customer(
            email=customer_email, first_name=first_name, last_name="Roe", locale=locale
        ),
        store=Store(name="Shop Example", email=store_email, locale=None),
        **(defaults | extra),
    )


def timeline_event(
    order_id: str,
    *,
    minutes: int = 0,
    kind: TimelineKind = TimelineKind.STATUS_CHANGED,
    status: OrderStatus | None = OrderStatus.HANDLING,
    event_id: str | None = None,
    store_id: str = "store-1",
) -> TimelineEvent:
    message = None
    if kind != TimelineKind.STATUS_CHANGED:
        message = ConversationMessage(
            message_id=f"<m-{uuid.uuid4().hex}@ct.example.com>",
            from_=Participant(
                alias="a" * 32 + "@ct.example.com", name="Shop", role=ParticipantRole.STORE
            ),
            to=Participant(
                alias="b" * 32 + "@ct.example.com", name="Jane Roe", role=ParticipantRole.CUSTOMER
            ),
            subject="Your order",
            first_words="Hello Jane",
            has_attachment=False,
            attachment_names=[],
            direction=Direction.TO_CUSTOMER,
            size_bytes=1234,
        )
    return TimelineEvent(
        event_id=event_id or str(uuid.uuid4()),
        order_id=order_id,
        store_id=store_id,
        occurred_at=T0 + timedelta(minutes=minutes),
        kind=kind,
        causation_id="cause-" + (event_id or "x"),
        status=status if kind == TimelineKind.STATUS_CHANGED else None,
        message=message,
    )


async def produce(settings: Settings, topic: str, items: Sequence[tuple[str, bytes]]) -> None:
    """Send (key, value) pairs and wait until Kafka acknowledged every one."""
    producer: AIOKafkaProducer[bytes, bytes] = AIOKafkaProducer(
        **client_options(settings), enable_idempotence=True
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, key=k.encode(), value=v) for k, v in items]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def read_topic(
    settings: Settings, topic: str, *, want: int, timeout: float = 30
) -> list[Any]:
    """The first `want` records of a topic, read without a consumer group."""
    consumer: AIOKafkaConsumer[bytes, bytes] = AIOKafkaConsumer(
        topic,
        **client_options(settings),
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        async with asyncio.timeout(timeout):
            while len(records) < want:
                for part in (await consumer.getmany(timeout_ms=300)).values():
                    records += part
    finally:
        await consumer.stop()
    return records


async def topic_size(settings: Settings, topic: str) -> int:
    """How many records the topic holds now, over all partitions."""
    consumer: AIOKafkaConsumer[bytes, bytes] = AIOKafkaConsumer(
        **client_options(settings), group_id=None
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()


@contextlib.asynccontextmanager
async def running(*services: Service) -> AsyncIterator[asyncio.Event]:
    """Run services in the background for the block; stop them gracefully after it."""
    stopping = asyncio.Event()
    tasks = [asyncio.create_task(s.run(stopping)) for s in services]
    try:
        async with asyncio.timeout(60):
            while not all(s.is_ready() for s in services):
                for task in tasks:
                    if task.done():
                        task.result()
                await asyncio.sleep(0.05)
        yield stopping
    finally:
        stopping.set()
        async with asyncio.timeout(60):
            await asyncio.gather(*tasks)


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a `ct` subprocess that runs with exactly these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CT_")}
    for name, value in settings.model_dump().items():
        if value is not None:
            env[f"CT_{name.upper()}"] = _env_text(value)
    return env | {"CT_LOG_FORMAT": "json"} | extra


def _env_text(value: object) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return str(value).lower() if isinstance(value, bool) else str(value)
