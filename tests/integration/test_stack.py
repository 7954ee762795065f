"""The local stack is made of real servers: Kafka, a MongoDB-wire database and SMTP."""

from __future__ import annotations

import asyncio
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from pathlib import Path

import aiosmtplib
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pymongo.errors import DuplicateKeyError

from tests.conftest import REPO, Capture
from worker.adapters import mongo
from worker.adapters.kafka_client import client_options
from worker.core.config import Settings, load_settings
from worker.devtools.sink import read_index

pytestmark = pytest.mark.stack
STACK_SINK_DIR = "sink"


async def _consume(
    settings: Settings, topic: str, group: str, want: int
) -> list[tuple[bytes, bytes]]:
    consumer: AIOKafkaConsumer[bytes, bytes] = AIOKafkaConsumer(
        topic,
        **client_options(settings),
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    seen: list[tuple[bytes, bytes]] = []
    try:
        async with asyncio.timeout(30):
            while len(seen) < want:
                batches = await consumer.getmany(timeout_ms=500, max_records=300)
                for records in batches.values():
                    seen += [(r.key or b"", r.value or b"") for r in records]
        await consumer.commit()
    finally:
        await consumer.stop()
    return seen


async def test_kafka_consumer_group_resumes_after_its_committed_offset(topics: Settings) -> None:
    topic = topics.topic_order_status
    producer: AIOKafkaProducer[bytes, bytes] = AIOKafkaProducer(
        **client_options(topics), acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        for i in range(1000):
            await producer.send(topic, key=f"order-{i % 37}".encode(), value=f"v{i}".encode())
        await producer.flush()
        first = await _consume(topics, topic, "g-resume-" + topic, 1000)
        assert sorted(v for _, v in first) == sorted(f"v{i}".encode() for i in range(1000))
        # keyed messages keep per-key order within their partition
        per_key: dict[bytes, list[int]] = {}
        for key, value in first:
            per_key.setdefault(key, []).append(int(value[1:]))
        assert all(vals == sorted(vals) for vals in per_key.values())

        for i in range(1000, 1010):
            await producer.send(topic, key=b"order-late", value=f"v{i}".encode())
        await producer.flush()
        resumed = await _consume(topics, topic, "g-resume-" + topic, 10)
        assert sorted(v for _, v in resumed) == sorted(f"v{i}".encode() for i in range(1000, 1010))
    finally:
        await producer.stop()

    check: AIOKafkaConsumer[bytes, bytes] = AIOKafkaConsumer(
        **client_options(topics), group_id="g-resume-" + topic
    )
    await check.start()
    try:
        partitions = range(topics.topic_partitions)
        committed = [await check.committed(TopicPartition(topic, p)) or 0 for p in partitions]
        assert sum(committed) == 1010
    finally:
        await check.stop()


async def test_async_mongo_client_on_the_wire_database(db: mongo.Database) -> None:
    orders = db["orders"]
    await orders.insert_one({"_id": "o-1", "storeId": "s-1", "notes": ["a"]})
    assert (await orders.find_one({"_id": "o-1"}) or {})["storeId"] == "s-1"

    await orders.update_one({"_id": "o-1"}, {"$push": {"notes": "b"}})
    await orders.update_one({"_id": "o-2"}, {"$push": {"notes": "x"}}, upsert=True)
    assert (await orders.find_one({"_id": "o-1"}) or {})["notes"] == ["a", "b"]
    assert (await orders.find_one({"_id": "o-2"}) or {})["notes"] == ["x"]
    assert await orders.count_documents({}) == 2

    await db["aliases"].create_index("orderKey", unique=True)
    await db["aliases"].insert_one({"_id": "a1", "orderKey": "o-1/CUSTOMER"})
    with pytest.raises(DuplicateKeyError):
        await db["aliases"].insert_one({"_id": "a2", "orderKey": "o-1/CUSTOMER"})


async def test_multipart_message_is_captured_as_eml(capture: Capture) -> None:
    await _send_multipart(capture.port, "Captured in-process")
    [entry] = capture.messages()
    parsed = BytesParser(policy=default_policy).parsebytes(capture.raw(entry))
    assert entry["rcptTos"] == ["customer@example.org"]
    assert parsed["Subject"] == "Captured in-process"
    assert parsed.is_multipart()
    assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]


async def test_the_stacks_own_sink_files_what_it_accepts(stack: None) -> None:
    """The `ct sink` process the stack runs, not an in-process one."""
    proc = await asyncio.create_subprocess_exec(
        str(REPO / "deploy/local/stack"), "paths", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    sink_dir = dict(line.split("=", 1) for line in out.decode().split())[STACK_SINK_DIR]
    subject = f"stack sink {asyncio.get_running_loop().time()}"
    await _send_multipart(load_settings().smtp_port, subject)
    entries = [e for e in read_index(Path(sink_dir)) if e["headers"].get("Subject") == subject]
    assert len(entries) == 1
    raw = (Path(sink_dir) / entries[0]["file"]).read_bytes()
    assert b"<p>Hello in HTML</p>" in raw


async def _send_multipart(port: int, subject: str) -> None:
    message = EmailMessage()
    message["From"] = "store@example.com"
    message["To"] = "customer@example.org"
    message["Subject"] = subject
    message.set_content("Hello in text")
    message.add_alternative("<p>Hello in HTML</p>", subtype="html")
    await aiosmtplib.send(message, hostname="127.0.0.1", port=port, start_tls=False)
