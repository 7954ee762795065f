"""Looking into Kafka topics from the tests and the benchmarks."""

from __future__ import annotations

from collections import Counter

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from tests.support.polling import until
from worker.config import Settings


async def topic_size(settings: Settings, topic: str) -> int:
    """Records in a topic now: the sum of its partitions' end offsets (nothing here compacts)."""
    consumer: AIOKafkaConsumer[bytes, bytes] = AIOKafkaConsumer(
        topic, bootstrap_servers=settings.kafka_bootstrap, group_id=None
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


async def partition_leaders(settings: Settings, topics: list[str]) -> Counter[int]:
    """How many partitions of these topics each broker (by node id) leads right now."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    return Counter(p["leader"] for t in described for p in t["partitions"] if p["leader"] >= 0)


async def under_replicated(settings: Settings, topics: list[str]) -> int:
    """Partitions of these topics whose in-sync replicas are fewer than their replicas."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    return sum(len(p["isr"]) < len(p["replicas"]) for t in described for p in t["partitions"])
