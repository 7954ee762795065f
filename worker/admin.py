"""Operator actions: audited alias unmasking, the dead-letter queue, key rotation."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from bson import Binary
from pymongo.errors import DuplicateKeyError

from worker.adapters.alias_store import AliasRecord, AliasStore
from worker.adapters.kafka import Record, make_producer
from worker.adapters.kafka_client import Consumer
from worker.adapters.mongo import Database
from worker.config import Settings
from worker.crypto import AddressCipher
from worker.domain import aliases as rules
from worker.events import ParticipantRole


async def resolve_alias(
    db: Database, store: AliasStore, alias: str, *, reason: str, operator: str, reveal: bool
) -> AliasRecord | None:
    """Look an alias up; every lookup is audited, and written before anything is revealed."""
    record = await store.lookup(alias)
    await db["audit"].insert_one(
        {
            "at": datetime.now(UTC),
            "action": "alias.reveal" if reveal else "alias.resolve",
            "alias": alias.strip().lower(),
            "found": record is not None,
            "orderId": record.order_id if record else None,
            "operator": operator,
            "reason": reason,
        }
    )
    return record


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
    settings: Settings, *, group: str, since: datetime | None, dry_run: bool
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
            replayed.append(letter)
            if dry_run or not letter.origin_topic:
                continue
            headers = [
                (k, v) for k, v in letter.record.headers or () if not k.startswith("ct.dlq.")
            ]
            headers.append(
                ("ct.replayed-from", f"{settings.topic_dlq}:{letter.record.offset}".encode())
            )
            await producer.send_and_wait(
                letter.origin_topic,
                value=letter.record.value,
                key=letter.record.key,
                headers=headers,
            )
    finally:
        await producer.stop()
    return replayed


async def reencrypt_addresses(db: Database, cipher: AddressCipher) -> tuple[int, int]:
    """Re-encrypt every alias's address under the current key; returns (seen, rewritten).

    Hashes and reverse aliases' order keys are derived from the key too, so they are rewritten
    with it and an external party keeps its reverse alias after the rotation.
    """
    seen = rewritten = 0
    async for doc in db["aliases"].find({}):
        seen += 1
        blob = bytes(doc["realEnc"])
        if not cipher.needs_reencrypt(blob):
            continue
        real = cipher.decrypt(blob, doc["_id"])
        real_hash = cipher.address_hash(real)
        update: dict[str, object] = {
            "realEnc": Binary(cipher.encrypt(real, doc["_id"])),
            "realHash": real_hash,
        }
        if doc["role"] == ParticipantRole.EXTERNAL.value:
            # The claim moves to the key's new hash: insert the new one before deleting the old,
            # so that a crash in between leaves the alias findable under one or the other.
            new_key = rules.order_key(doc["orderId"], ParticipantRole.EXTERNAL, real_hash)
            with contextlib.suppress(DuplicateKeyError):
                await db["alias_keys"].insert_one(
                    {"_id": new_key, "alias": doc["_id"], "orderId": doc["orderId"]}
                )
            await db["alias_keys"].delete_one({"_id": doc["orderKey"]})
            update["orderKey"] = new_key
        await db["aliases"].update_one({"_id": doc["_id"]}, {"$set": update})
        rewritten += 1
        if rewritten % 500 == 0:
            await asyncio.sleep(0)
    return seen, rewritten
