"""Ceilings: how fast each backing service goes alone, with the clients the workers use.

Each returns a plain dict of numbers for results.json; rates are per second of wall time.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import aiosmtplib
from aiokafka.abc import ConsumerRebalanceListener
from pymongo import InsertOne, UpdateOne

from bench.upstreams import smtp_source
from bench.workload import CODEC, lifecycle_events, order_document, render_mail, timeline_lifecycle
from worker.adapters import mongo
from worker.adapters.dialect import detect_dialect
from worker.adapters.dkim_keys import generate_key as generate_dkim_key
from worker.adapters.kafka import make_consumer
from worker.contracts.events import OrderStatusChanged, TimelineEvent
from worker.core.config import Settings
from worker.domain.dkim import DkimSigner, SigningKey
from worker.domain.projection import Entry, merge
from worker.domain.templates import TemplateRenderer

BULK_BATCH = 500
UPDATE_CHUNK = 50


async def kafka_consume(settings: Settings, topic: str, n: int, group: str) -> dict[str, Any]:
    """(a) A fresh group reads `n` records with the workers' consumer settings, doing nothing.

    Timed from the partition assignment (the group join excluded) to the last record.
    """
    consumer = make_consumer(settings, topic, group)
    assigned: list[float] = []

    class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
        async def on_partitions_revoked(self, revoked: Any) -> None:
            return None

        async def on_partitions_assigned(self, tps: Any) -> None:
            assigned.append(time.perf_counter())

    await consumer.start()
    consumer.subscribe([topic], listener=Listener())
    seen = 0
    try:
        async with asyncio.timeout(300):
            while seen < n:
                batches = await consumer.getmany(
                    timeout_ms=500, max_records=settings.batch_max_records
                )
                seen += sum(len(records) for records in batches.values())
        elapsed = time.perf_counter() - assigned[0]
    finally:
        await consumer.stop()
    return {"records": seen, "seconds": round(elapsed, 3), "rate": round(seen / elapsed)}


async def smtp_send(
    port: int, n: int, pool: int, messages: list[tuple[str, str, bytes]]
) -> dict[str, Any]:
    """(b) `pool` reused aiosmtplib connections send `n` pre-rendered messages into the sink."""
    remaining = itertools.count()
    cycle = itertools.cycle(messages)

    async def sender() -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30, start_tls=False)
        await client.connect()
        try:
            while next(remaining) < n:
                mail_from, rcpt, raw = next(cycle)
                await client.sendmail(mail_from, [rcpt], raw)
        finally:
            await client.quit()

    started = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(pool)))
    elapsed = time.perf_counter() - started
    size = sum(len(m[2]) for m in messages) // len(messages)
    return {
        "messages": n,
        "pool": pool,
        "avg_bytes": size,
        "seconds": round(elapsed, 3),
        "rate": round(n / elapsed),
    }


async def bulk_upsert(settings: Settings, n: int, budget_s: float) -> dict[str, Any]:
    """(c) Order-shaped documents upserted by `_id` in unordered bulk_writes of 500.

    Up to `n` documents or `budget_s` seconds (FerretDB 1.24 upserts slow down as the
    collection grows), and the same documents by insert_many for comparison. Then, on the
    filled collection, updates filtered by `_id` alone and by `{_id, entryCount}` (the
    projector's guard), UPDATE_CHUNK per command: FerretDB 1.24 on SQLite wedges a database
    on one command with more than 100 matching updates (see `ferret_wedge`).
    """
    client = mongo.connect(settings, app_name="ct-bench")
    db = client[settings.mongo_db]
    docs = [order_document("bulk", i) for i in range(n)]
    done = 0
    try:
        started = time.perf_counter()
        while done < n and time.perf_counter() - started < budget_s:
            batch = docs[done : done + BULK_BATCH]
            writes = [
                UpdateOne(
                    {"_id": d["_id"]},
                    {"$set": {k: v for k, v in d.items() if k != "_id"}},
                    upsert=True,
                )
                for d in batch
            ]
            await db["bench_orders"].bulk_write(writes, ordered=False)
            done += len(batch)
        elapsed = time.perf_counter() - started
        started = time.perf_counter()
        for start in range(0, done, BULK_BATCH):
            await db["bench_inserts"].insert_many(docs[start : start + BULK_BATCH], ordered=False)
        inserts = done / (time.perf_counter() - started)
        probe = docs[: min(100, done)]
        by_id = await _timed_updates(db["bench_orders"], [{"_id": d["_id"]} for d in probe])
        guarded = await _timed_updates(
            db["bench_orders"],
            [{"_id": d["_id"], "entryCount": d["entryCount"]} for d in probe],
        )
    finally:
        await client.close()
    return {
        "documents": done,
        "batch": BULK_BATCH,
        "seconds": round(elapsed, 3),
        "rate": round(done / elapsed),
        "insert_many_rate": round(inserts),
        "update_by_id_rate": by_id,
        "update_by_id_and_entrycount_rate": guarded,
        "collection_size": done,
    }


async def projector_writes(settings: Settings, n: int, batch: int) -> dict[str, Any]:
    """The projector stage's own document writes, computed in memory beforehand and replayed.

    The same `n` timeline events in batches of `batch`: a new order's document is an insert, a
    known one's a `$set` of the merged timeline, the dialect's writes per bulk_write as the
    projector sends them. No reads, no Kafka, no decoding: what the database itself costs for
    this workload, in events per second, beside `bulk_write` (fresh documents only).
    """
    events = timeline_lifecycle(n, "pw")
    timelines: dict[str, list[Entry]] = {}
    batches: list[list[InsertOne[dict[str, Any]] | UpdateOne]] = []
    for start in range(0, len(events), batch):
        by_order: dict[str, list[TimelineEvent]] = {}
        for event in events[start : start + batch]:
            by_order.setdefault(event.order_id, []).append(event)
        writes: list[InsertOne[dict[str, Any]] | UpdateOne] = []
        for order_id, incoming in by_order.items():
            known = order_id in timelines
            projection = merge(timelines.get(order_id, []), incoming)
            if projection is None:
                continue
            timelines[order_id] = projection.timeline
            fields = projection.fields()
            writes.append(
                UpdateOne({"_id": order_id}, {"$set": fields})
                if known
                else InsertOne({"_id": order_id, **fields})
            )
        batches.append(writes)
    client = mongo.connect(settings, app_name="ct-bench")
    orders = client[settings.mongo_db]["bench_projector_writes"]
    size = (
        await detect_dialect(client[settings.mongo_db], settings.mongo_dialect)
    ).writes_per_command
    commands = [w[i : i + size] for w in batches for i in range(0, len(w), size)]
    try:
        started = time.perf_counter()
        for command in commands:
            await orders.bulk_write(command, ordered=False)
        elapsed = time.perf_counter() - started
    finally:
        await client.close()
    writes_total = sum(len(c) for c in commands)
    return {
        "events": len(events),
        "batch": batch,
        "writes": writes_total,
        "commands": len(commands),
        "seconds": round(elapsed, 3),
        "rate": round(len(events) / elapsed),
        "writes_per_s": round(writes_total / elapsed),
    }


async def _timed_updates(orders: Any, filters: list[dict[str, Any]]) -> int:
    writes = [UpdateOne(f, {"$set": {"benchTouched": True}}) for f in filters]
    started = time.perf_counter()
    for start in range(0, len(writes), UPDATE_CHUNK):
        await orders.bulk_write(writes[start : start + UPDATE_CHUNK], ordered=False)
    return round(len(writes) / (time.perf_counter() - started))


async def ferret_wedge(settings: Settings, db_name: str, updates: int = 101) -> dict[str, Any]:
    """Does one `update` command of `updates` matching updates come back? Private stack only.

    FerretDB 1.24 (SQLite) keeps each matched update's query open, with its pooled SQLite
    connection, until the whole command ends; the pool holds 100, so update 101 waits forever
    and the database stays wedged until FerretDB restarts.
    """
    client = mongo.connect(settings, app_name="ct-bench", timeout_ms=5_000)
    coll = client[db_name]["wedge"]
    try:
        await coll.insert_many([{"_id": f"d{i}", "entryCount": 1} for i in range(updates)])
        writes = [UpdateOne({"_id": f"d{i}"}, {"$set": {"x": 1}}) for i in range(updates)]
        try:
            async with asyncio.timeout(10):
                await coll.bulk_write(writes, ordered=False)
        except TimeoutError:
            return {"updates_in_one_command": updates, "answered": False, "waited_s": 10}
        return {"updates_in_one_command": updates, "answered": True}
    finally:
        await client.close()


async def alias_lookups(settings: Settings, samples: int = 20) -> dict[str, Any]:
    """Per-query time of the notifier's alias read (`orderKey $in`) against a read by `_id`."""
    client = mongo.connect(settings, app_name="ct-bench")
    aliases = client[settings.mongo_db]["aliases"]
    try:
        size = await aliases.estimated_document_count()
        docs = [d async for d in aliases.find({}, {"orderKey": 1}).limit(samples)]
        started = time.perf_counter()
        for d in docs:
            _ = [x async for x in aliases.find({"orderKey": {"$in": [d["orderKey"], "x"]}})]
        by_key = (time.perf_counter() - started) / max(len(docs), 1)
        started = time.perf_counter()
        for d in docs:
            await aliases.find_one({"_id": d["_id"]})
        by_id = (time.perf_counter() - started) / max(len(docs), 1)
    finally:
        await client.close()
    return {
        "aliases": size,
        "order_key_in_ms": round(by_key * 1000, 2),
        "by_id_ms": round(by_id * 1000, 2),
    }


def cpu_paths(n: int, domain: str) -> dict[str, Any]:
    """One core, no I/O: Avro decode into the model, render + compose + serialise a mail, and
    the same mails DKIM-signed: messages/s with and without signing, in the same run."""
    events = lifecycle_events(n, "cpu")
    values = [CODEC.encode(e) for e in events]
    started = time.perf_counter()
    for value in values:
        CODEC.decode(value, OrderStatusChanged)
    decode = n / (time.perf_counter() - started)
    renderer = TemplateRenderer(None)
    sample = events[: min(n, 2_000)]
    started = time.perf_counter()
    for event in sample:
        renderer.render(event)
    render = len(sample) / (time.perf_counter() - started)
    started = time.perf_counter()
    for i, event in enumerate(sample):
        render_mail(renderer, event, domain, i)
    mail = len(sample) / (time.perf_counter() - started)
    return {
        "decode_per_s": round(decode),
        "render_per_s": round(render),
        "render_compose_serialise_per_s": round(mail),
        **signing_rates(renderer, sample, domain),
    }


def signing_rates(
    renderer: TemplateRenderer, sample: list[OrderStatusChanged], domain: str
) -> dict[str, int]:
    """The same mails DKIM-signed as the workers sign them: rsa-sha256 (2048 bits) alone, and
    with an ed25519 signature too; signing alone, and render + compose + serialise + sign."""
    rsa = SigningKey("bench", generate_dkim_key("rsa"))
    ed25519 = SigningKey("bench-ed25519", generate_dkim_key("ed25519"))
    mails = [render_mail(renderer, event, domain, i)[2] for i, event in enumerate(sample)]
    rates: dict[str, int] = {}
    for name, keys in (("rsa", [rsa]), ("rsa_ed25519", [rsa, ed25519])):
        signer = DkimSigner(domain, keys)
        started = time.perf_counter()
        for raw in mails:
            signer.sign(raw, timestamp=1_800_000_000)
        rates[f"dkim_sign_{name}_per_s"] = round(len(mails) / (time.perf_counter() - started))
        started = time.perf_counter()
        for i, event in enumerate(sample):
            signer.sign(render_mail(renderer, event, domain, i)[2], timestamp=1_800_000_000)
        elapsed = time.perf_counter() - started
        rates[f"render_compose_serialise_sign_{name}_per_s"] = round(len(sample) / elapsed)
    return rates


async def smtp_source_send(
    port: int, n: int, messages: list[tuple[str, str, bytes]]
) -> dict[str, Any]:
    """(b') Postfix's smtp-source sends the same notifications: a C client's view of the upstream.

    One process per message, two sessions each, connections kept open (-d).
    """
    per_message = -(-n // len(messages))
    run = await smtp_source(port, messages, per_message, sessions=2)
    return {
        "messages": run.messages,
        "pool": run.sessions,
        "seconds": round(run.seconds, 3),
        "rate": round(run.messages / run.seconds),
        "generator_cpu_s": round(run.cpu_s, 2),
        "failures": run.failures,
    }
