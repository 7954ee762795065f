"""Looking into Kafka topics from the tests and the benchmarks."""

from __future__ import annotations

from collections import Counter
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from tests.support.polling import eventually, until
from worker.adapters.kafka_client import admin_client, client_options
from worker.core.config import Settings


async def topic_size(settings: Settings, topic: str) -> int:
    """Records in a topic now: the sum of its partitions' end offsets (nothing here compacts)."""
    consumer: AIOKafkaConsumer[bytes, bytes] = AIOKafkaConsumer(
        topic, **client_options(settings), group_id=None
    )
    await consumer.start()
    try:
        # Waiting for the self-assignment also lets aiokafka's no-group task start, which its
        # stop() needs: stopped before that task first ran, it raises CancelledError.
        await until(lambda: bool(consumer.assignment()), 30, 0.05)
        ends = await consumer.end_offsets(list(consumer.assignment()))
    finally:
        await consumer.stop()
    return sum(ends.values())


async def committed(settings: Settings, topic: str, group: str) -> int:
    """The sum of the group's committed offsets on the topic (0 when it committed nothing)."""
    consumer: AIOKafkaConsumer[bytes, bytes] = AIOKafkaConsumer(
        **client_options(settings), group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        return sum([await consumer.committed(tp) or 0 for tp in partitions])
    finally:
        await consumer.stop()


async def _partitions(settings: Settings, topics: list[str]) -> list[dict[str, Any]]:
    async with admin_client(settings, "ct-tests") as admin:
        described = await admin.describe_topics(topics)
    return [p for t in described for p in t["partitions"]]


async def partition_leaders(settings: Settings, topics: list[str]) -> Counter[int]:
    """How many partitions of these topics each broker (by node id) leads right now."""
    return Counter(p["leader"] for p in await _partitions(settings, topics) if p["leader"] >= 0)


async def under_replicated(settings: Settings, topics: list[str]) -> int:
    """Partitions of these topics whose in-sync replicas are fewer than their replicas."""
    return sum(len(p["isr"]) < len(p["replicas"]) for p in await _partitions(settings, topics))


async def consumed_to_the_end(
    settings: Settings, topic: str, group: str, *, timeout: float = 60.0
) -> int:
    """Wait until `group` has committed every record `topic` holds now; returns that count.

    The workers commit an offset only after its record's work is durable, so once the group's
    commits reach the end, whatever it was going to do about those records is done: what a test
    asserting that something did *not* happen waits for, instead of a fixed sleep.
    """
    end = await topic_size(settings, topic)

    async def at_the_end() -> bool:
        return await committed(settings, topic, group) >= end

    await eventually(
        at_the_end, timeout=timeout, interval=0.3, what=f"{group} to commit {topic} to {end}"
    )
    return end
