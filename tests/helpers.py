"""Builders and runners shared by the integration tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pydantic import SecretStr

from worker.adapters.kafka_client import client_options
from worker.contracts.codec import SingleObjectCodec
from worker.core.config import Settings
from worker.core.service import Service

CODEC = SingleObjectCodec()


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
