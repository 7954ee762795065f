"""The batch-consume loop: getmany -> handler (makes its effects durable) -> commit.

With `in_flight` above 1 the next poll is fetched and handled while earlier batches still run:
an event no longer waits behind the slowest email of the batch before it, nor behind that
batch's commit. Offsets are committed in poll order, each batch's once it and every batch
before it are done, so a commit never covers work that is not durable. Two batches in flight
may hold events of one order: a handler given more than one batch at a time keeps each order's
events in order itself (the notifier chains an order's runs, services/notify.py).

A rebalance is a stop for the batches in flight: each gets the grace period, then is abandoned,
what finished is committed, and the member rejoins within the group's rebalance timeout. The
next owner of a partition starts from its commit, and this member sends nothing beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError

from worker.adapters.kafka import (
    CANCELLED_WORK_WAIT_S,
    BatchHandler,
    Record,
    make_consumer,
    require_topics,
)
from worker.adapters.kafka_client import PERMANENT_ERRORS, rejection
from worker.core import metrics
from worker.core.config import Settings

log = structlog.get_logger(__name__)
# How long a poll waits for records: long when nothing runs, short while batches do, so a
# finished batch is committed (and its slot reused) soon after it ends.
IDLE_POLL_MS = 500
BUSY_POLL_MS = 20


class _Ended(enum.Enum):
    HANDLED = "handled"
    # The grace ran out at a stop: it and every batch after it are redelivered.
    AT_SHUTDOWN = "batch_abandoned_at_shutdown"
    # The grace ran out in a rebalance: it and the batches after it are the next owner's.
    AT_REBALANCE = "batch_abandoned_at_rebalance"


@dataclass
class _Batch:
    work: asyncio.Task[_Ended]
    offsets: dict[TopicPartition, int]  # the next offset of each partition once it is done


class _CommitOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, loop: BatchConsumer) -> None:
        self._loop = loop

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._loop.give_up_partitions()

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info(
            "partitions_assigned",
            partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in assigned),
        )
        if self._loop.on_assigned is not None:
            self._loop.on_assigned()


class BatchConsumer:
    """Polls, hands each poll to the handler (up to `in_flight` at once), commits in order."""

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
        in_flight: int = 1,
        on_assigned: Callable[[], None] | None = None,
    ) -> None:
        if in_flight < 1:
            raise ValueError("in_flight must be at least 1")
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
        self._in_flight = in_flight
        self._running: deque[_Batch] = deque()
        # Set once a batch was abandoned at shutdown: nothing after it may be committed.
        self._abandoned = False
        # Set once a batch was abandoned in a rebalance: nothing after it is committed until
        # the revocation (`give_up_partitions`) has dropped what is left.
        self._revoked = False
        # Set when the partitions are revoked: the batches in flight end within the grace period.
        self._revoking = asyncio.Event()
        # One more at each revocation: a poll fetched before it holds the old assignment's records.
        self._generation = 0
        self.lock = asyncio.Lock()
        self.ready = False

    async def run(self, stopping: asyncio.Event) -> None:
        try:
            await require_topics(self._settings, [self._topic])
            await self._consumer.start()
            self._consumer.subscribe([self._topic], listener=_CommitOnRevoke(self))
            self.ready = True
            while not stopping.is_set() and not self._abandoned:
                async with self.lock:
                    # A full house waits for its oldest batch; otherwise only the finished
                    # ones are committed.
                    await self.settle(oldest=len(self._running) >= self._in_flight)
                if self._abandoned:
                    break
                batches = await self._fetch(BUSY_POLL_MS if self._running else IDLE_POLL_MS)
                fetched_in = self._generation  # no await since getmany returned
                if not batches:
                    continue
                async with self.lock:
                    # A poll from before a revocation: its partitions start again from their
                    # committed offsets, behind any batch the revocation abandoned.
                    if fetched_in == self._generation:
                        self._start(batches, stopping)
            async with self.lock:  # a stop: each batch finishes within the grace period
                await self.settle(everything=True)
        finally:
            self.ready = False
            async with self.lock:
                # After an error, what finished before it is still committed; the rest is not.
                with contextlib.suppress(Exception):
                    await self.settle()
                await self._cancel_running()
                await self._consumer.stop()

    def _start(self, batches: dict[TopicPartition, list[Record]], stopping: asyncio.Event) -> None:
        # A poll made before a rebalance may hold records of partitions revoked since: their new
        # owner starts from the committed offset, so handling them here would do the work twice.
        owned = self._consumer.assignment()
        batches = {tp: part for tp, part in batches.items() if tp in owned and part}
        if not batches:
            return
        records = [r for part in batches.values() for r in part]
        work = asyncio.ensure_future(self._handle(records, stopping, self._revoking))
        offsets = {tp: part[-1].offset + 1 for tp, part in batches.items()}
        self._running.append(_Batch(work, offsets))
        self._observe_lag(batches)

    async def give_up_partitions(self) -> None:
        """The partitions are being revoked: the batches in flight get the grace period, as at a
        stop, then are abandoned; what finished is committed, so that their next owner starts
        after it. The group waits for this member no longer than its rebalance timeout (kafka.py)
        and then gives the partitions away while these batches would still be sending: waiting
        for them without a bound made two notifiers send the same emails (the cluster fault
        test, a rebalance under load). A handler's error is not raised here, in aiokafka's
        rebalance: the loop raises it."""
        self._generation += 1
        # Set before taking the lock: the loop may hold it while it waits for the oldest batch.
        self._revoking.set()
        async with self.lock:
            try:
                await self.settle(everything=True)
            except Exception:  # noqa: BLE001 - left at the head of the queue, for the loop
                return
            finally:
                self._revoking = asyncio.Event()
            if self._revoked:  # and those behind it: each ends within the grace period too
                if self._running:
                    await asyncio.wait([batch.work for batch in self._running])
                self._running.clear()
                self._revoked = False  # the records are the next owner's, from the commit

    async def settle(self, *, oldest: bool = False, everything: bool = False) -> None:
        """Commit the batches finished in order from the oldest; `oldest` first waits for the
        oldest, `everything` for all. A handler's error is raised here, in poll order."""
        done: dict[TopicPartition, int] = {}
        try:
            while self._running and not (self._abandoned or self._revoked):
                head = self._running[0]
                if not head.work.done() and not (everything or (oldest and not done)):
                    break
                ended = await asyncio.shield(head.work)
                self._running.popleft()
                if ended is _Ended.AT_SHUTDOWN:
                    self._abandoned = True
                    break
                if ended is _Ended.AT_REBALANCE:
                    self._revoked = True
                    break
                done |= head.offsets
        finally:
            await self._commit(done)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except KafkaError as exc:
            # Not fatal: the records are redelivered and every handler is idempotent.
            log.warning("commit_failed", consumer=self._name, error=repr(exc))

    async def _cancel_running(self) -> None:
        """What is still running after an error (or an abandoned batch) is not committed."""
        running, self._running = list(self._running), deque()
        for batch in running:
            batch.work.cancel()
        if running:
            await asyncio.wait([b.work for b in running], timeout=CANCELLED_WORK_WAIT_S)

    async def _fetch(self, timeout_ms: int) -> dict[TopicPartition, list[Record]]:
        try:
            batches: dict[TopicPartition, list[Record]] = await self._consumer.getmany(
                timeout_ms=timeout_ms, max_records=self._max_records
            )
        except PERMANENT_ERRORS as exc:
            # A group ACL missing, say: nothing was fetched, so nothing is committed.
            self.ready = False
            using = f"consumer group {self._group} on topic {self._topic}"
            raise (rejection(exc, self._settings, user_of=using) or exc) from None
        return batches

    async def _handle(
        self, records: list[Record], stopping: asyncio.Event, revoking: asyncio.Event
    ) -> _Ended:
        """Run the handler; once a stop or a revocation (of the assignment it was fetched in)
        is asked, give it at most the grace period to finish."""
        started = time.perf_counter()
        work = asyncio.ensure_future(self._handler(records))
        stop_wait = asyncio.ensure_future(stopping.wait())
        revoke_wait = asyncio.ensure_future(revoking.wait())
        try:
            await asyncio.wait({work, stop_wait, revoke_wait}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():
                await asyncio.wait({work}, timeout=self._grace_s)
            if not work.done():
                work.cancel()
                # What the handler finishes on cancellation (the notifier records an email the
                # upstream is accepting: one round trip and one write) needs its clients, which
                # close once this returns.
                await asyncio.wait({work}, timeout=min(self._grace_s, CANCELLED_WORK_WAIT_S))
                ended = _Ended.AT_SHUTDOWN if stopping.is_set() else _Ended.AT_REBALANCE
                log.warning(ended.value, consumer=self._name, records=len(records))
                return ended
            work.result()
            metrics.BATCH_SECONDS.labels(consumer=self._name).observe(time.perf_counter() - started)
            return _Ended.HANDLED
        finally:
            stop_wait.cancel()
            revoke_wait.cancel()
            if not work.done():  # this batch itself was cancelled: so is its handler
                work.cancel()

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
    in_flight: int = 1,
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
        in_flight=in_flight,
        on_assigned=on_assigned,
    )
