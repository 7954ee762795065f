"""Looking into Kafka topics from the tests and the benchmarks."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition

from tests.support.polling import until
from worker.adapters.kafka_client import client_options
from worker.config import Settings


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
