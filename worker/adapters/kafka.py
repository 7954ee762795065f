"""Kafka through aiokafka: clients, topics, producers and consumers (the batch loop that uses
them is adapters/batch_consumer.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeAlias

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    InvalidProducerEpoch,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    UnknownProducerId,
    UnknownTopicOrPartitionError,
    for_code,
)

from worker.adapters.kafka_client import (
    Consumer,
    Producer,
    admin_client,
    is_retriable,
    principal,
    rejection,
)
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


# What a revocation takes beyond its batches' grace and cancellation: their commit, the rejoin.
REJOIN_MARGIN_S = 15.0


def rebalance_timeout_ms(settings: Settings) -> int:
    """How long the group waits for a member to rejoin in a rebalance, after which it gives the
    member's partitions to others: longer than the member takes to end the batches in flight
    (batch_consumer.py, `give_up_partitions`), which would otherwise go on sending beside the
    partitions' next owner. aiokafka's default, the session timeout, is no such bound."""
    wind_down_s = settings.shutdown_grace_s + min(settings.shutdown_grace_s, CANCELLED_WORK_WAIT_S)
    return round(1000 * (wind_down_s + REJOIN_MARGIN_S))


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
        rebalance_timeout_ms=rebalance_timeout_ms(settings),
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
