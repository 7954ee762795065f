"""Builders and runners shared by the integration tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from worker.codec import SingleObjectCodec
from worker.config import Settings
from worker.service import Service

CODEC = SingleObjectCodec()


async def produce(settings: Settings, topic: str, items: Sequence[tuple[str, bytes]]) -> None:
    """Send (key, value) pairs and wait until Kafka acknowledged every one."""
    producer: AIOKafkaProducer[bytes, bytes] = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, enable_idempotence=True
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
        bootstrap_servers=settings.kafka_bootstrap,
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
