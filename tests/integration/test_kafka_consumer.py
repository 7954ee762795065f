"""The workers' Kafka consumer against the real broker: how a backlog is shared out, and
polls handled side by side but committed in order."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence

import pytest
from aiokafka import AIOKafkaProducer

from tests.support.kafka import committed
from tests.support.polling import eventually
from worker.adapters.batch_consumer import consume
from worker.adapters.kafka import Record, make_consumer
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


class _Polls:
    """A handler whose first poll waits for `release`; `fail_after_first` makes the next fail."""

    def __init__(self, *, fail_after_first: bool = False) -> None:
        self.release = asyncio.Event()
        self.handled: list[list[int]] = []  # each poll's partitions, as it was handed over
        self.returned = 0
        self._fail = fail_after_first

    async def __call__(self, records: Sequence[Record]) -> None:
        self.handled.append(sorted({r.partition for r in records}))
        if len(self.handled) == 1:
            await self.release.wait()
        elif self._fail:
            raise RuntimeError("the second poll's handler failed")
        self.returned += 1


async def _one_record(settings: Settings, partition: int) -> None:
    producer: AIOKafkaProducer[bytes, bytes] = AIOKafkaProducer(**client_options(settings))
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic_order_status, RECORD, partition=partition)
    finally:
        await producer.stop()


async def _two_polls(settings: Settings, polls: _Polls) -> tuple[asyncio.Task[None], asyncio.Event]:
    """A consumer with two polls in flight, its first poll (partition 0) waiting, its second
    (partition 1) handed over meanwhile."""
    stopping = asyncio.Event()
    loop = consume(
        settings, settings.topic_order_status, settings.group_notifier, polls,
        name="test", in_flight=2,
    )  # fmt: skip
    running = asyncio.create_task(loop.run(stopping))
    await _one_record(settings, 0)
    await eventually(lambda: len(polls.handled) == 1, what="the first poll")
    await _one_record(settings, 1)
    await eventually(lambda: len(polls.handled) == 2, what="the second poll, the first waiting")
    return running, stopping


@pytest.mark.stack
async def test_the_next_poll_is_handled_while_one_waits_and_committed_after_it(
    topics: Settings,
) -> None:
    settings, polls = topics, _Polls()
    running, stopping = await _two_polls(settings, polls)
    try:
        assert polls.handled == [[0], [1]]
        await eventually(lambda: polls.returned == 1, what="the second poll's end")
        await asyncio.sleep(0.3)  # many busy polls of the loop: time to commit, were it allowed
        assert await committed(settings, settings.topic_order_status, settings.group_notifier) == 0
        polls.release.set()
        await eventually(lambda: _committed_is(settings, 2), what="both polls committed, in order")
    finally:
        stopping.set()
        await running


@pytest.mark.stack
async def test_a_failed_poll_is_raised_after_the_earlier_one_is_committed(
    topics: Settings,
) -> None:
    settings, polls = topics, _Polls(fail_after_first=True)
    running, _ = await _two_polls(settings, polls)
    await asyncio.sleep(0.3)
    assert not running.done()  # the failure waits for the poll before it
    polls.release.set()
    with pytest.raises(RuntimeError, match="second poll"):
        await asyncio.wait_for(running, 30)
    # The first poll's record is committed, the failed poll's is left for redelivery.
    assert await committed(settings, settings.topic_order_status, settings.group_notifier) == 1


async def _committed_is(settings: Settings, expected: int) -> bool:
    got = await committed(settings, settings.topic_order_status, settings.group_notifier)
    return got == expected


class _Member:
    """A handler that records each poll; `stuck`: its first poll never ends unless cancelled."""

    def __init__(self, *, stuck: bool) -> None:
        self.stuck = stuck
        self.handled: list[list[tuple[int, int]]] = []  # each poll's (partition, offset)s
        self.finished: list[tuple[int, int]] = []
        self.cancelled = 0
        self.assignments = 0

    async def __call__(self, records: Sequence[Record]) -> None:
        self.handled.append([(r.partition, r.offset) for r in records])
        if self.stuck and len(self.handled) == 1:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        self.finished += self.handled[-1]

    def assigned(self) -> None:
        self.assignments += 1


@pytest.mark.stack
async def test_a_rebalance_gives_a_batch_in_flight_the_grace_period_and_hands_its_records_on(
    topics: Settings,
) -> None:
    """A member whose batch outlasts a rebalance must stop it and rejoin before the group gives
    its partitions away: left sending, it and their next owner send the same emails. Waiting
    for the batch without a bound got the member evicted (after the rebalance timeout) while
    its batch went on."""
    settings = topics.model_copy(update={"shutdown_grace_s": 1.0})
    topic, group = settings.topic_order_status, settings.group_notifier
    first, second = _Member(stuck=True), _Member(stuck=False)
    stopping = asyncio.Event()
    members = [
        consume(settings, topic, group, h, name=f"member-{n}", on_assigned=h.assigned)
        for n, h in enumerate((first, second))
    ]
    running = [asyncio.create_task(members[0].run(stopping))]
    try:
        await _one_record(settings, 0)
        await eventually(lambda: len(first.handled) == 1, what="the first member's stuck poll")
        running.append(asyncio.create_task(members[1].run(stopping)))
        # The grace period (1 s) after the revocation, then the record is handled again, by
        # whichever member owns partition 0 now, and committed; well inside the 30 s after
        # which the group would have evicted the first member.
        await eventually(
            lambda: (0, 0) in first.finished + second.finished, timeout=20, what="redelivery"
        )
        assert first.cancelled == 1
        await eventually(lambda: _committed_is(settings, 1), what="the record committed")
        # Both are still members: each got a share in the rebalance.
        assert first.assignments >= 2 and second.assignments >= 1
        assert not any(task.done() for task in running)
    finally:
        stopping.set()
        await asyncio.gather(*running)
