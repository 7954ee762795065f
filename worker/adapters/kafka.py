"""Kafka through aiokafka: clients, topics, dead letters and the batch-consume loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeAlias

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    UnknownProducerId,
    UnknownTopicOrPartitionError,
    for_code,
)

from worker.adapters.kafka_client import (
    PERMANENT_ERRORS,
    Consumer,
    Producer,
    admin_client,
    is_retriable,
    principal,
    rejection,
)
from worker.core import metrics
from worker.core.config import Rejected, Settings

log = structlog.get_logger(__name__)

Record: TypeAlias = ConsumerRecord[bytes, bytes]
BatchHandler = Callable[[Sequence[Record]], Awaitable[None]]
TOPIC_METADATA_WAIT_S = 30.0
CANCELLED_WORK_WAIT_S = 5.0
UNKNOWN_TOPIC_WAIT_S = 3.0


# After these an idempotent producer stays broken (seen after a broker restart: its sequence
# numbers never line up again). Retrying with it cannot help; a new producer can, so the worker
# exits and its orchestrator restarts it (the delivery ledger keeps that from re-sending email).
PRODUCER_BROKEN = (
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
    InvalidProducerEpoch,
)


def is_transient(exc: BaseException) -> bool:
    """Broker unavailable, leader moving, request timed out: worth another try. Not: a broken
    producer, credentials, ACLs, a missing topic, a record too large (see kafka_client)."""
    if isinstance(exc, PRODUCER_BROKEN):
        return False
    return is_retriable(exc)


async def require_topics(settings: Settings, topics: Sequence[str]) -> None:
    """Raise Rejected unless every topic exists and this client may use it.

    A consumer subscribed to a missing topic waits forever with no partitions, and a producer's
    send to one times out again and again: both look alive while they do nothing. A leader being
    elected (a broker restarting) is waited out; a missing topic gets a few seconds, for one
    created a moment ago by another process.
    """
    started = time.monotonic()
    async with admin_client(settings, "ct-preflight") as admin:
        while True:
            failed = [t for t in await admin.describe_topics(list(topics)) if t["error_code"]]
            if not failed:
                return
            waited = time.monotonic() - started
            for topic in failed:
                error = for_code(topic["error_code"])()
                if (
                    isinstance(error, UnknownTopicOrPartitionError)
                    and waited < UNKNOWN_TOPIC_WAIT_S
                ):
                    continue
                if is_retriable(error) and waited < TOPIC_METADATA_WAIT_S:
                    continue
                raise rejection(error, settings, user_of=f"topic {topic['topic']}") or error
            await asyncio.sleep(0.5)


def make_producer(
    settings: Settings, client_id: str, *, linger_ms: int = 5
) -> AIOKafkaProducer[bytes, bytes]:
    """Idempotent (implies acks=all), so a retried send after a broker hiccup is written once.

    `linger_ms` trades latency for larger batches; a caller that waits on each send (the relay
    holds an SMTP session open until Kafka acknowledges) wants 0: sends made while a request is
    in flight are still batched together.
    """
    return Producer(
        settings,
        client_id=client_id,
        enable_idempotence=True,
        acks="all",
        linger_ms=linger_ms,
        request_timeout_ms=15_000,
    )


# How much of one partition a fetch brings back. aiokafka's `getmany` drains the partitions it
# has fetched in the order it fetched them, and a partition stays first until its buffer is
# empty: with its default of 1 MiB a backlog is worked through one partition at a time, and an
# order in the last partition waited minutes while other partitions flowed (the cluster fault
# test saw 3 of 12 partitions untouched for 2 minutes). A buffer of a few hundred records at most
# is drained by one `getmany`, refetched behind the others, and the partitions take turns. The
# broker still returns a record batch larger than this whole (KIP-74), so nothing gets stuck.
PARTITION_FETCH_BYTES = 64 * 1024


def make_consumer(settings: Settings, topic: str, group: str) -> AIOKafkaConsumer[bytes, bytes]:
    consumer: AIOKafkaConsumer[bytes, bytes] = Consumer(
        settings,
        group_id=group,
        client_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=settings.batch_max_records,
        max_partition_fetch_bytes=PARTITION_FETCH_BYTES,
        # A batch may wait on SMTP retries; stay in the group meanwhile.
        max_poll_interval_ms=600_000,
        # Partitions added to a topic (see docs/operations.md, scaling) are picked up this soon.
        metadata_max_age_ms=30_000,
        session_timeout_ms=30_000,
        heartbeat_interval_ms=3_000,
    )
    return consumer


def topic_specs(settings: Settings, partitions: int, replication: int) -> list[NewTopic]:
    return [
        NewTopic(settings.topic_order_status, partitions, replication),
        NewTopic(settings.topic_timeline, partitions, replication),
        # Dead letters are few and read by people: one partition keeps them in arrival order.
        NewTopic(settings.topic_dlq, 1, replication),
    ]


async def ensure_topics(settings: Settings, partitions: int, replication: int) -> list[str]:
    """Create the project's topics; existing ones are left alone. Returns the names created."""
    async with admin_client(settings, "ct-admin") as admin:
        existing = set(await admin.list_topics())
        wanted = [
            t for t in topic_specs(settings, partitions, replication) if t.name not in existing
        ]
        created = []
        for topic in wanted:
            response = await admin.create_topics([topic])
            for name, code, *_ in response.topic_errors:
                error = for_code(code)
                if code == 0:
                    created.append(name)
                elif error is TopicAuthorizationFailedError:
                    raise Rejected(
                        f"Kafka does not allow {principal(settings)} to create topic {name}: "
                        "grant it the Create ACL on that topic, or create the topics as an admin"
                    )
                elif error is not TopicAlreadyExistsError:  # created meanwhile by another
                    raise error(f"creating topic {name}")
        await _until_described(admin, [t.name for t in wanted])
        return created


async def _until_described(admin: AIOKafkaAdminClient, topics: list[str]) -> None:
    """Wait until the brokers' metadata shows every partition of these new topics.

    A consumer that subscribes to a topic its broker does not know yet gets no partitions and
    looks again only after metadata_max_age_ms: a worker started right after `ct topics create`
    (the demo on a fresh machine) would sit idle.
    """
    deadline = time.monotonic() + TOPIC_METADATA_WAIT_S
    while topics and time.monotonic() < deadline:
        described = await admin.describe_topics(topics)
        ready = {
            t["topic"]
            for t in described
            if t["error_code"] == 0
            and t["partitions"]
            and all(p["error_code"] == 0 for p in t["partitions"])
        }
        topics = [t for t in topics if t not in ready]
        if topics:
            await asyncio.sleep(0.2)


class _CommitOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, loop: BatchConsumer) -> None:
        self._loop = loop

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # Waits for the batch in flight (the lock is never held around getmany), then commits it,
        # so the next owner of these partitions starts after the work that is already done.
        async with self._loop.lock:
            await self._loop.commit_pending()

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info(
            "partitions_assigned",
            partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in assigned),
        )
        if self._loop.on_assigned is not None:
            self._loop.on_assigned()


class BatchConsumer:
    """getmany -> handler (makes its effects durable) -> commit, with a bounded drain on stop."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer[bytes, bytes],
        topic: str,
        handler: BatchHandler,
        *,
        name: str,
        max_records: int,
        grace_s: float,
        settings: Settings,
        group: str,
        on_assigned: Callable[[], None] | None = None,
    ) -> None:
        self._consumer = consumer
        # Called on every new assignment, before any record of it is handled: what a handler
        # knows of its partitions' state from before may be another owner's since.
        self.on_assigned = on_assigned
        self._settings = settings
        self._group = group
        self._topic = topic
        self._handler = handler
        self._name = name
        self._max_records = max_records
        self._grace_s = grace_s
        # Offsets whose work is durable but not committed yet.
        self._pending: dict[TopicPartition, int] = {}
        self.lock = asyncio.Lock()
        self.ready = False

    async def commit_pending(self) -> None:
        if not self._pending:
            return
        offsets, self._pending = self._pending, {}
        try:
            await self._consumer.commit(offsets)
        except KafkaError as exc:
            # Not fatal: the records are redelivered and every handler is idempotent.
            log.warning("commit_failed", consumer=self._name, error=repr(exc))

    async def run(self, stopping: asyncio.Event) -> None:
        try:
            await require_topics(self._settings, [self._topic])
            await self._consumer.start()
            self._consumer.subscribe([self._topic], listener=_CommitOnRevoke(self))
            self.ready = True
            while not stopping.is_set():
                batches = await self._fetch()
                if not batches:
                    continue
                async with self.lock:
                    records = [r for part in batches.values() for r in part]
                    if not await self._handle(records, stopping):
                        break  # grace ran out mid-batch: leave it uncommitted for redelivery
                    for tp, part in batches.items():
                        self._pending[tp] = part[-1].offset + 1
                    await self.commit_pending()
                self._observe_lag(batches)
        finally:
            self.ready = False
            async with self.lock:
                await self.commit_pending()
            await self._consumer.stop()

    async def _fetch(self) -> dict[TopicPartition, list[Record]]:
        try:
            batches: dict[TopicPartition, list[Record]] = await self._consumer.getmany(
                timeout_ms=500, max_records=self._max_records
            )
        except PERMANENT_ERRORS as exc:
            # A group ACL missing, say: nothing was fetched, so nothing is committed.
            self.ready = False
            using = f"consumer group {self._group} on topic {self._topic}"
            raise (rejection(exc, self._settings, user_of=using) or exc) from None
        return batches

    async def _handle(self, records: Sequence[Record], stopping: asyncio.Event) -> bool:
        """Run the handler; once stop is asked, give it at most the grace period to finish."""
        started = time.perf_counter()
        work = asyncio.ensure_future(self._handler(records))
        stop_wait = asyncio.ensure_future(stopping.wait())
        try:
            done, _ = await asyncio.wait({work, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            if work not in done:
                await asyncio.wait({work}, timeout=self._grace_s)
            if not work.done():
                work.cancel()
                # What the handler finishes on cancellation (the notifier records an email the
                # upstream is accepting: one round trip and one write) needs its clients, which
                # close once this returns.
                await asyncio.wait({work}, timeout=min(self._grace_s, CANCELLED_WORK_WAIT_S))
                log.warning(
                    "batch_abandoned_at_shutdown", consumer=self._name, records=len(records)
                )
                return False
            work.result()
            metrics.BATCH_SECONDS.labels(consumer=self._name).observe(time.perf_counter() - started)
            return True
        finally:
            stop_wait.cancel()

    def _observe_lag(self, batches: dict[TopicPartition, list[Record]]) -> None:
        for tp in batches:
            highwater = self._consumer.highwater(tp)
            if highwater is not None:
                position = batches[tp][-1].offset + 1
                metrics.CONSUMER_LAG.labels(consumer=self._name, partition=str(tp.partition)).set(
                    max(highwater - position, 0)
                )


def consume(
    settings: Settings,
    topic: str,
    group: str,
    handler: BatchHandler,
    *,
    name: str,
    on_assigned: Callable[[], None] | None = None,
) -> BatchConsumer:
    """A batch consumer of `topic` in consumer group `group`, set up from the settings."""
    return BatchConsumer(
        make_consumer(settings, topic, group),
        topic,
        handler,
        name=name,
        max_records=settings.batch_max_records,
        grace_s=settings.shutdown_grace_s,
        settings=settings,
        group=group,
        on_assigned=on_assigned,
    )
