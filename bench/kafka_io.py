"""The bench's own Kafka clients: a pipelined producer, a topic watcher, committed offsets."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from bench.processes import poll_until
from worker.adapters.kafka_client import client_options
from worker.contracts.codec import SingleObjectCodec
from worker.contracts.events import TimelineEvent, TimelineKind
from worker.core.config import Settings

CODEC = SingleObjectCodec()
PROGRESS_EVERY_S = 10.0
IN_FLIGHT = 5_000  # sends awaited per chunk: bounds the producer's buffered futures


def producer(settings: Settings) -> AIOKafkaProducer[bytes, bytes]:
    # The same settings as the workers' producers: idempotent, acks=all, linger 5 ms.
    return AIOKafkaProducer(
        **client_options(settings),
        client_id="ct-bench",
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
    )


async def produce_all(
    settings: Settings, topic: str, items: Sequence[tuple[bytes, bytes]]
) -> float:
    """Send every (key, value) as fast as Kafka takes them; returns the seconds it took."""
    client = producer(settings)
    await client.start()
    started = time.perf_counter()
    try:
        for start in range(0, len(items), IN_FLIGHT):
            chunk = items[start : start + IN_FLIGHT]
            futures = [await client.send(topic, key=k, value=v) for k, v in chunk]
            await asyncio.gather(*futures)
    finally:
        await client.stop()
    return time.perf_counter() - started


class TopicWatcher:
    """Counts a topic's records as they arrive; optionally times NOTIFICATION_SENT arrivals.

    `sent` maps an order-status event id to the monotonic time it was produced; each
    NOTIFICATION_SENT whose causation id is in it yields `arrived - sent` in `latencies`.
    """

    def __init__(self, settings: Settings, topic: str, *, from_end: bool = False) -> None:
        self._settings = settings
        self._topic = topic
        self._from_end = from_end
        self.count = 0
        self.sent: dict[str, float] = {}
        self.latencies: list[float] = []
        # (monotonic time, records so far), at most one per PROGRESS_EVERY_S: the throughput curve.
        self.progress: list[tuple[float, int]] = []
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer[bytes, bytes] | None = None

    async def start(self) -> None:
        consumer: AIOKafkaConsumer[bytes, bytes] = AIOKafkaConsumer(
            self._topic,
            **client_options(self._settings),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest" if self._from_end else "earliest",
            # Fetch as soon as one record is there: the watcher must not add latency itself.
            fetch_max_wait_ms=10,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        await consumer.start()
        # With no group, the consumer assigns itself every partition once it has the metadata.
        await poll_until(lambda: bool(consumer.assignment()), 30, 0.05)
        for tp in consumer.assignment():
            await consumer.position(tp)  # resolves "latest" now, before anything is produced
        self._consumer = consumer
        self._task = asyncio.create_task(self._run(consumer))

    async def _run(self, consumer: AIOKafkaConsumer[bytes, bytes]) -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=100, max_records=10_000)
            now = time.monotonic()
            for records in batches.values():
                self.count += len(records)
                if self.sent:
                    for record in records:
                        self._time(record.value, now)
            if batches:
                self._changed.set()
                if not self.progress or now - self.progress[-1][0] >= PROGRESS_EVERY_S:
                    self.progress.append((now, self.count))

    def _time(self, value: bytes | None, now: float) -> None:
        if value is None:
            return
        event = CODEC.decode(value, TimelineEvent)
        if event.kind == TimelineKind.NOTIFICATION_SENT:
            sent = self.sent.pop(event.causation_id, None)
            if sent is not None:
                self.latencies.append(now - sent)

    async def wait_for(self, count: int, limit_s: float) -> bool:
        """True once `count` records have arrived; False when `limit_s` passed first."""
        deadline = time.monotonic() + limit_s
        while self.count < count:
            if self._task is not None and self._task.done():
                self._task.result()
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 1.0))
        return True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()


async def committed(settings: Settings, group: str) -> int:
    """Sum of a consumer group's committed offsets over all its partitions."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return sum(meta.offset for meta in offsets.values() if meta.offset >= 0)
