"""The dead-letter topic: refused records published with whence and why, read back and replayed.

A record that can never be processed as it is goes to CT_TOPIC_DLQ unchanged (key, value and
headers) plus `ct.dlq.*` headers saying where it came from and why; people read them with
`ct dlq list` and send them back to their original topic with `ct dlq replay` once the cause is
fixed. Replay progress is a consumer group's committed offsets, so a second replay does not
re-publish what the first one did.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from worker.adapters.kafka import Record, is_transient, make_producer
from worker.adapters.kafka_client import Consumer
from worker.core import metrics
from worker.core.config import Settings
from worker.core.retry import retry_transient

log = structlog.get_logger(__name__)
Headers = list[tuple[str, bytes]]
# What a record with personal data becomes before it reaches the DLQ (its value sealed, the
# headers that say how), and what opens it again for a replay (None: its subject was erased).
Sealer = Callable[[Record], Awaitable[tuple[bytes, Headers]]]
Opener = Callable[["DeadLetter"], Awaitable[bytes | None]]


class DeadLetters:
    """Publishes refused records to the DLQ: original key, value, headers, plus whence and why."""

    def __init__(
        self,
        producer: AIOKafkaProducer[bytes, bytes],
        topic: str,
        component: str,
        max_delay: float = 30.0,
        seal: Sealer | None = None,
    ) -> None:
        self._seal = seal
        self._producer = producer
        self._topic = topic
        self._component = component
        self._max_delay = max_delay

    async def publish(self, record: Record, reason: str) -> None:
        """Publish, retrying while Kafka is unavailable: a refused record is never dropped."""
        await retry_transient(
            lambda: self._publish(record, reason),
            name="kafka.dlq",
            is_transient=is_transient,
            max_delay=self._max_delay,
        )

    async def _publish(self, record: Record, reason: str) -> None:
        value, sealing = (record.value, []) if self._seal is None else await self._seal(record)
        headers = [
            *[(k, v) for k, v in (record.headers or ()) if not k.startswith("ct.dlq.")],
            *sealing,
            ("ct.dlq.topic", record.topic.encode()),
            ("ct.dlq.partition", str(record.partition).encode()),
            ("ct.dlq.offset", str(record.offset).encode()),
            ("ct.dlq.component", self._component.encode()),
            ("ct.dlq.reason", reason.encode()[:1000]),
            ("ct.dlq.at", datetime.now(UTC).isoformat().encode()),
        ]
        await self._producer.send_and_wait(
            self._topic, value=value, key=record.key, headers=headers
        )
        metrics.DLQ_RECORDS.labels(component=self._component).inc()
        log.warning(
            "dead_lettered",
            component=self._component,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            reason=reason,
        )


@dataclass(frozen=True)
class DeadLetter:
    record: Record
    origin_topic: str
    origin_partition: int
    origin_offset: int
    component: str
    reason: str
    at: datetime | None


def _dead_letter(record: Record) -> DeadLetter:
    headers = {k: v.decode("utf-8", "replace") for k, v in record.headers or ()}
    at = headers.get("ct.dlq.at")
    return DeadLetter(
        record=record,
        origin_topic=headers.get("ct.dlq.topic", ""),
        origin_partition=int(headers.get("ct.dlq.partition", "-1")),
        origin_offset=int(headers.get("ct.dlq.offset", "-1")),
        component=headers.get("ct.dlq.component", ""),
        reason=headers.get("ct.dlq.reason", ""),
        at=datetime.fromisoformat(at) if at else None,
    )


async def dead_letters(
    settings: Settings, *, group: str | None, commit: bool = False
) -> AsyncIterator[DeadLetter]:
    """The DLQ from the group's position (or the start) up to its end as it is now."""
    consumer: AIOKafkaConsumer[bytes, bytes] = Consumer(
        settings, group_id=group, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    try:
        await consumer.start()
        partitions = [
            TopicPartition(settings.topic_dlq, p)
            for p in consumer.partitions_for_topic(settings.topic_dlq) or {0}
        ]
        consumer.assign(partitions)
        end = await consumer.end_offsets(partitions)
        for tp in partitions:
            while await consumer.position(tp) < end[tp]:
                batch = await consumer.getmany(tp, timeout_ms=1000, max_records=500)
                for record in batch.get(tp, []):
                    if record.offset >= end[tp]:
                        break
                    yield _dead_letter(record)
                if commit and batch.get(tp):
                    await consumer.commit({tp: batch[tp][-1].offset + 1})
    finally:
        await consumer.stop()


async def replay_dead_letters(
    settings: Settings,
    *,
    group: str,
    since: datetime | None,
    dry_run: bool,
    open_value: Opener | None = None,
) -> list[DeadLetter]:
    """Re-publish dead letters to their original topic, original key, value and headers."""
    replayed = []
    producer = make_producer(settings, "ct-dlq-replay")
    try:
        await producer.start()
        async for letter in dead_letters(
            settings, group=None if dry_run else group, commit=not dry_run
        ):
            if since and letter.at and letter.at < since:
                continue
            if dry_run or not letter.origin_topic:
                replayed.append(letter)
                continue
            if await republish(producer, settings, letter, open_value):
                replayed.append(letter)
    finally:
        await producer.stop()
    return replayed


async def republish(
    producer: AIOKafkaProducer[bytes, bytes],
    settings: Settings,
    letter: DeadLetter,
    open_value: Opener | None = None,
) -> bool:
    """Send a dead letter back to its original topic: its key, value (opened, when it was
    sealed) and headers, less ours; False when it cannot be opened (its subject was erased)."""
    value = letter.record.value if open_value is None else await open_value(letter)
    if value is None:
        log.info("dead_letter_not_replayed", offset=letter.record.offset, reason="erased")
        return False
    headers = [
        (k, v) for k, v in letter.record.headers or () if not k.startswith(("ct.dlq.", "ct.seal"))
    ]
    headers.append(("ct.replayed-from", f"{settings.topic_dlq}:{letter.record.offset}".encode()))
    await producer.send_and_wait(
        letter.origin_topic, value=value, key=letter.record.key, headers=headers
    )
    return True
