"""The workers' Kafka consumer against the real broker: how a backlog is shared out."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from aiokafka import AIOKafkaProducer

from worker.adapters.kafka import make_consumer
from worker.adapters.kafka_client import client_options
from worker.core.config import Settings

RECORDS_PER_PARTITION = 1_500
RECORD = b"x" * 400  # 1,500 of them are 600 KB: under a default fetch's 1 MiB per partition


async def _backlog(settings: Settings, topic: str, partitions: int) -> None:
    producer: AIOKafkaProducer[bytes, bytes] = AIOKafkaProducer(**client_options(settings))
    await producer.start()
    try:
        sends = [
            await producer.send(topic, RECORD, partition=p)
            for p in range(partitions)
            for _ in range(RECORDS_PER_PARTITION)
        ]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


@pytest.mark.stack
async def test_a_backlog_is_worked_through_every_partition_in_turn(topics: Settings) -> None:
    """An order's event must not wait for whole other partitions to drain first: the first
    batches of a backlog hold records of every partition, in shares near equal."""
    settings, partitions = topics, topics.topic_partitions
    topic = settings.topic_order_status
    await _backlog(settings, topic, partitions)
    consumer = make_consumer(settings, topic, settings.group_notifier)
    consumer.subscribe([topic])
    await consumer.start()
    first: Counter[int] = Counter()
    try:
        async with asyncio.timeout(60):
            while first.total() < RECORDS_PER_PARTITION:
                batch = await consumer.getmany(timeout_ms=1_000, max_records=500)
                for tp, records in batch.items():
                    first[tp.partition] += len(records)
    finally:
        await consumer.stop()
    # Worked one partition at a time, the first 1,500 records would all be partition 0's.
    assert sorted(first) == list(range(partitions)), first
    assert min(first.values()) >= RECORDS_PER_PARTITION // (2 * partitions), first
