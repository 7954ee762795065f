"""The projector writes the timeline into MongoDB order documents (real Kafka, real FerretDB)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import bson
import pytest

from tests.helpers import CODEC, produce, read_topic, running
from tests.support.events import timeline_event
from tests.support.kafka import consumed_to_the_end
from tests.support.polling import eventually
from worker.adapters import mongo
from worker.adapters.dead_letters import DeadLetters
from worker.adapters.dialect import MONGODB, Dialect
from worker.adapters.kafka import make_consumer, make_producer
from worker.adapters.orders import OrdersRepository, _write_for
from worker.apps.projector import ProjectorService
from worker.contracts.events import OrderStatus, TimelineEvent, TimelineKind
from worker.core.config import Settings
from worker.domain.projection import merge
from worker.services.projection import Projector

pytestmark = pytest.mark.stack


async def _entries(db: mongo.Database, order_id: str) -> list[dict[str, Any]]:
    doc = await db["orders"].find_one({"_id": order_id})
    return list(doc.get("timeline", [])) if doc else []


async def _produce_events(settings: Settings, events: list[TimelineEvent]) -> None:
    await produce(
        settings, settings.topic_timeline, [(e.order_id, CODEC.encode(e)) for e in events]
    )


async def test_out_of_order_events_give_a_sorted_timeline_and_the_latest_status(
    topics: Settings, db: mongo.Database
) -> None:
    statuses = [
        OrderStatus.PAYMENT_APPROVED,
        OrderStatus.HANDLING,
        OrderStatus.INVOICED,
        OrderStatus.SHIPPED,
    ]
    events = [timeline_event("o-1", minutes=i * 10, status=s) for i, s in enumerate(statuses)]
    events.append(timeline_event("o-1", minutes=35, kind=TimelineKind.NOTIFICATION_SENT))
    shuffled = events[::-1]
    async with running(ProjectorService(topics, CODEC)):
        await _produce_events(topics, shuffled[:2])
        await eventually(lambda: _count(db, "o-1", 2), what="first two entries")
        await _produce_events(topics, shuffled[2:])
        await eventually(lambda: _count(db, "o-1", 5), what="all entries")
    doc = await db["orders"].find_one({"_id": "o-1"})
    assert doc is not None
    assert [e["eventId"] for e in doc["timeline"]] == [e.event_id for e in events]
    assert doc["status"] == "SHIPPED"
    assert doc["statusAt"] == events[3].occurred_at
    assert doc["entryCount"] == 5
    assert doc["storeId"] == "store-1"
    assert doc["updatedAt"] == events[4].occurred_at


async def _count(db: mongo.Database, order_id: str, want: int) -> bool:
    return len(await _entries(db, order_id)) == want


async def test_bad_values_go_to_the_dlq_with_a_reason_and_good_ones_are_still_projected(
    topics: Settings, db: mongo.Database
) -> None:
    good = CODEC.encode(timeline_event("o-dlq"))
    bad = [
        b"garbage that is not avro",
        good[:25],
        b"\xc3\x01" + bytes(8) + good[10:],
    ]
    later = [timeline_event("o-dlq", minutes=m) for m in (1, 2)]
    await produce(
        topics,
        topics.topic_timeline,
        [
            ("o-dlq", good),
            *[("o-dlq", b) for b in bad],
            *[("o-dlq", CODEC.encode(e)) for e in later],
        ],
    )
    async with running(ProjectorService(topics, CODEC)):
        await eventually(lambda: _count(db, "o-dlq", 3), what="the good entries")
        dead = await read_topic(topics, topics.topic_dlq, want=3)
    reasons = sorted(dict(r.headers)["ct.dlq.reason"].decode() for r in dead)
    assert [r.split(" ")[0] for r in reasons] == ["body", "not", "unknown"], reasons
    for record in dead:
        headers = dict(record.headers)
        assert headers["ct.dlq.topic"].decode() == topics.topic_timeline
        assert headers["ct.dlq.component"] == b"projector"
        assert int(headers["ct.dlq.offset"]) in {1, 2, 3}
        assert record.value in bad
        assert record.key == b"o-dlq"


async def test_replaying_the_topic_leaves_documents_byte_for_byte_unchanged(
    topics: Settings, db: mongo.Database
) -> None:
    events = [timeline_event(f"o-{i % 4}", minutes=random.randint(0, 500)) for i in range(60)]
    await _produce_events(topics, events)
    async with running(ProjectorService(topics, CODEC)):
        await eventually(lambda: _total(db, 60), what="60 entries")
    before = [d async for d in db["orders"].find(sort=[("_id", 1)])]

    replay = topics.model_copy(update={"group_projector": topics.group_projector + "-replay"})
    async with running(ProjectorService(replay, CODEC)):
        await consumed_to_the_end(replay, replay.topic_timeline, replay.group_projector)
    after = [d async for d in db["orders"].find(sort=[("_id", 1)])]
    assert [bson.encode(d) for d in after] == [bson.encode(d) for d in before]

    # and rebuilding from nothing gives the same bytes too
    await db["orders"].delete_many({})
    rebuild = topics.model_copy(update={"group_projector": topics.group_projector + "-rebuild"})
    async with running(ProjectorService(rebuild, CODEC)):
        await eventually(lambda: _total(db, 60), what="rebuilt entries")
    rebuilt = [d async for d in db["orders"].find(sort=[("_id", 1)])]
    assert [bson.encode(d) for d in rebuilt] == [bson.encode(d) for d in before]


async def _total(db: mongo.Database, want: int) -> bool:
    counts = [int(d["entryCount"]) async for d in db["orders"].find({}, {"entryCount": 1})]
    return sum(counts) == want


async def test_a_projector_dying_after_its_write_but_before_its_commit_adds_no_duplicate(
    topics: Settings, db: mongo.Database, dialect: Dialect
) -> None:
    events = [timeline_event("o-crash", minutes=i) for i in range(10)]
    await _produce_events(topics, events)

    # First life: consume and write to MongoDB, then die without committing.
    consumer = make_consumer(topics, topics.topic_timeline, topics.group_projector)
    producer = make_producer(topics, "test")
    await consumer.start()
    await producer.start()
    try:
        consumer.subscribe([topics.topic_timeline])
        records: list[Any] = []
        async with asyncio.timeout(30):
            while len(records) < 10:
                records += [
                    r for part in (await consumer.getmany(timeout_ms=500)).values() for r in part
                ]
        projector = Projector(
            CODEC,
            OrdersRepository(db, dialect=dialect),
            DeadLetters(producer, topics.topic_dlq, "t"),
            1,
        )
        await projector.handle(records)
    finally:
        await consumer.stop()  # no commit: the crash
        await producer.stop()
    assert len(await _entries(db, "o-crash")) == 10

    # Second life: the same records come again from the last committed offset.
    async with running(ProjectorService(topics, CODEC)):
        await consumed_to_the_end(topics, topics.topic_timeline, topics.group_projector)
    entries = await _entries(db, "o-crash")
    assert sorted(e["eventId"] for e in entries) == sorted(e.event_id for e in events)


async def test_fields_owned_by_the_oms_survive_projection(
    topics: Settings, db: mongo.Database
) -> None:
    await db["orders"].insert_one({"_id": "o-oms", "customerTier": "gold", "notes": ["vip"]})
    await _produce_events(topics, [timeline_event("o-oms"), timeline_event("o-oms", minutes=1)])
    async with running(ProjectorService(topics, CODEC)):
        await eventually(lambda: _count(db, "o-oms", 2), what="entries on the OMS document")
    doc = await db["orders"].find_one({"_id": "o-oms"})
    assert doc is not None
    assert doc["customerTier"] == "gold"
    assert doc["notes"] == ["vip"]


async def test_a_hundred_events_of_one_order_in_one_batch_leave_a_hundred_entries(
    topics: Settings, db: mongo.Database
) -> None:
    events = [timeline_event("o-burst", minutes=random.randint(0, 50)) for _ in range(100)]
    await _produce_events(topics, events)
    async with running(ProjectorService(topics, CODEC)):
        await eventually(lambda: _count(db, "o-burst", 100), what="100 entries")
    entries = await _entries(db, "o-burst")
    assert sorted(e["eventId"] for e in entries) == sorted(e.event_id for e in events)
    assert [(e["occurredAt"], e["eventId"]) for e in entries] == sorted(
        (e["occurredAt"], e["eventId"]) for e in entries
    )


async def test_a_write_based_on_a_stale_read_is_detected_and_merged_again(
    db: mongo.Database,
) -> None:
    """The entryCount guard: a document that changed since the read is never overwritten blindly.

    The guard is the MongoDB dialect's; it is correct (only slow) on FerretDB too, so it is
    tested on whichever server the tests run against."""
    repo = OrdersRepository(db, dialect=MONGODB)
    first, second, late = (timeline_event("o-stale", minutes=m) for m in (1, 2, 3))
    await repo.project({"o-stale": [first]})
    stale_doc = await db["orders"].find_one({"_id": "o-stale"})
    await repo.project({"o-stale": [second]})  # another writer lands in between
    assert stale_doc is not None
    stale_projection = merge(stale_doc["timeline"], [late])
    assert stale_projection is not None
    lost = await repo._bulk_write([_write_for("o-stale", stale_doc, stale_projection.fields())])
    assert lost  # the guard refused the stale write ...
    await repo.project({"o-stale": [late]})  # ... and the retry merges on top of the fresh state
    entries = await _entries(db, "o-stale")
    assert [e["eventId"] for e in entries] == [first.event_id, second.event_id, late.event_id]


async def test_a_batch_touching_150_existing_orders_is_written(
    db: mongo.Database, dialect: Dialect
) -> None:
    """FerretDB v1 wedges on one update command with 100+ matched updates: writes are chunked."""
    repo = OrdersRepository(db, dialect=dialect)
    orders = [f"o-many-{i}" for i in range(150)]
    await repo.project({o: [timeline_event(o)] for o in orders})
    async with asyncio.timeout(60):
        added = await repo.project({o: [timeline_event(o, minutes=1)] for o in orders})
    assert added == 150
    assert await db["orders"].count_documents({"entryCount": 2}) == 150


async def test_documents_remembered_between_batches_are_the_documents_a_read_gives(
    db: mongo.Database, dialect: Dialect
) -> None:
    """The projector's cache of what it wrote: three batches of the same orders through a
    remembering repository leave documents identical to a repository that reads every time,
    datetimes to the millisecond included (BSON keeps milliseconds)."""
    remembering = OrdersRepository(db, dialect=dialect, cache_size=100)
    reading = OrdersRepository(db, dialect=dialect)
    for batch in range(3):
        for repo, prefix in ((remembering, "o-mem"), (reading, "o-read")):
            await repo.project(
                {
                    f"{prefix}-{i}": [
                        timeline_event(f"{prefix}-{i}", minutes=batch * 10 + k) for k in range(2)
                    ]
                    for i in range(5)
                }
            )
    for i in range(5):
        mem = await db["orders"].find_one({"_id": f"o-mem-{i}"}, {"_id": 0})
        read = await db["orders"].find_one({"_id": f"o-read-{i}"}, {"_id": 0})
        assert mem is not None and read is not None
        assert mem["entryCount"] == read["entryCount"] == 6
        assert [e["occurredAt"] for e in mem["timeline"]] == [
            e["occurredAt"] for e in read["timeline"]
        ]


async def test_after_forget_a_document_another_writer_changed_is_read_again(
    db: mongo.Database, dialect: Dialect
) -> None:
    """A rebalance (`forget`) between two batches: the order's other owner in between wrote
    an entry, and the next merge starts from it instead of from what this writer remembers."""
    mine = OrdersRepository(db, dialect=dialect, cache_size=100)
    other = OrdersRepository(db, dialect=dialect)
    first, between, later = (timeline_event("o-moved", minutes=m) for m in (1, 2, 3))
    await mine.project({"o-moved": [first]})
    await other.project({"o-moved": [between]})
    mine.forget()
    await mine.project({"o-moved": [later]})
    entries = await _entries(db, "o-moved")
    assert [e["eventId"] for e in entries] == [first.event_id, between.event_id, later.event_id]


async def test_an_order_past_its_size_budget_moves_old_entries_out_and_still_shows_them_all(
    db: mongo.Database, dialect: Dialect, unique: Any
) -> None:
    """Issue 19: an order document never grows to MongoDB's 16 MiB limit (which failed the whole
    batch); its oldest entries move to the overflow collection, and the timeline read (ct
    timeline, the console, the API) still returns every entry once, in order."""
    from worker.adapters.orders import read_timeline

    budget = 8000
    repo = OrdersRepository(db, dialect=dialect, max_document_bytes=budget)
    order = unique("o-big")
    status = timeline_event(order, minutes=0, status=OrderStatus.HANDLING)
    messages = [
        timeline_event(order, minutes=i, kind=TimelineKind.MESSAGE_FORWARDED, status=None)
        for i in range(1, 61)
    ]
    events = [status, *messages]
    for start in range(0, len(events), 10):
        await repo.project({order: events[start : start + 10]})
        doc = await db["orders"].find_one({"_id": order})
        assert doc is not None and len(bson.encode(doc)) < budget + 2000
    assert doc is not None
    assert doc["status"] == OrderStatus.HANDLING.value  # its entry moved out, the status stays
    assert doc["overflowCount"] > 0 and doc["entryCount"] == 61
    shown = await read_timeline(db, order)
    assert shown is not None and [e.event_id for e in shown] == [e.event_id for e in events]
    # A replay of everything adds nothing, in the document or in the overflow.
    assert await repo.project({order: events}) == 0
    again = await read_timeline(db, order)
    assert again is not None and [e.event_id for e in again] == [e.event_id for e in events]
    # A late event older than what moved out goes to the overflow, and shows in its place.
    late = timeline_event(order, minutes=1, kind=TimelineKind.MESSAGE_REJECTED, status=None)
    await repo.project({order: [late]})
    with_late = await read_timeline(db, order)
    assert with_late is not None and len(with_late) == 62
    assert [e.event_id for e in with_late].count(late.event_id) == 1
    # Refusals folded into an entry that moved out are counted there; a smaller count, later.
    for folded in (7, 3):
        await repo.project({order: [late.model_copy(update={"folded_refusals": folded})]})
    counted = await read_timeline(db, order)
    assert counted is not None and len(counted) == 62
    assert [e.folded_refusals for e in counted if e.event_id == late.event_id] == [7]
