"""Searching everything we keep for a person's traces: every MongoDB collection, a Kafka topic.

The erasure tests (tests/integration/test_subjects*.py) look for the bytes of an erased
person's address, names and texts; BSON strings and our Avro strings are UTF-8, so a byte search
finds every clear copy, whatever field or header holds it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import bson
from aiokafka import AIOKafkaConsumer

from tests.support.kafka import topic_size
from worker.adapters import mongo
from worker.adapters.kafka_client import client_options
from worker.core.config import Settings


async def scan_mongo(db: mongo.Database, traces: dict[str, bytes]) -> dict[str, list[str]]:
    """Per collection, which traces any of its documents holds (BSON strings are UTF-8)."""
    found: dict[str, list[str]] = {}
    for name in sorted(await db.list_collection_names()):
        hits: set[str] = set()
        async for doc in db[name].find({}):
            encoded = bson.encode(doc)
            hits |= {what for what, trace in traces.items() if trace in encoded}
        found[name] = sorted(hits)
    return found


async def scan_topic(settings: Settings, topic: str, traces: dict[str, bytes]) -> list[str]:
    """Which traces any record of the topic holds, in its key, value or headers."""
    size = await topic_size(settings, topic)
    consumer: AIOKafkaConsumer[bytes, bytes] = AIOKafkaConsumer(
        topic, **client_options(settings), auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    hits: set[str] = set()
    seen = 0
    try:
        async with asyncio.timeout(60):
            while seen < size:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for r in records:
                        seen += 1
                        blob = b"".join([r.key or b"", r.value or b"", *(v for _, v in r.headers)])
                        hits |= {what for what, trace in traces.items() if trace in blob}
    finally:
        await consumer.stop()
    return sorted(hits)


async def scan_everything(
    settings: Settings, db: mongo.Database, replayed: mongo.Database, traces: dict[str, bytes]
) -> dict[str, Any]:
    """The scan after an erasure: every collection of the database and of the one `replayed`
    from the timeline topic, and our timeline and dead-letter topics."""
    return {
        f"mongo {db.name}": await scan_mongo(db, traces),
        f"mongo {replayed.name} (replayed)": await scan_mongo(replayed, traces),
        f"kafka {settings.topic_timeline}": await scan_topic(
            settings, settings.topic_timeline, traces
        ),
        f"kafka {settings.topic_dlq}": await scan_topic(settings, settings.topic_dlq, traces),
    }


def flatten(scan: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """`{place: hits}` or `{database: {collection: hits}}` as rows of (where, hits)."""
    rows: list[tuple[str, list[str]]] = []
    for where, found in scan.items():
        if isinstance(found, dict):
            rows += [(f"{where}.{name}", hits) for name, hits in found.items()]
        else:
            rows.append((where, found))
    return rows
