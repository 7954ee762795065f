"""Worker stages end to end, each a `ct run` subprocess on the stage's own topics and database."""

from __future__ import annotations

import asyncio
import statistics
import time
from datetime import datetime
from typing import Any

from bench import db_ops
from bench.env import BenchEnv, Names
from bench.kafka_io import TopicWatcher, committed, produce_all, producer
from bench.processes import BenchError, poll_until
from bench.workers import WorkerGroup, WorkerProcess, inclusive_share, top_frames
from bench.workload import (
    CODEC,
    LIFECYCLE,
    encoded,
    encoded_timeline,
    lifecycle_events,
    now_utc,
    status_event,
    timeline_lifecycle,
)
from tests.support.kafka import topic_size
from worker.adapters import mongo

STALL_S = 60.0
# Where a notifier or projector spends its CPU, for the profile summary.
HOTSPOTS = {
    "mongo (pymongo client side)": "pymongo/",
    "smtp (aiosmtplib)": "aiosmtplib/",
    "kafka (aiokafka)": "aiokafka/",
    "avro + models (codec)": "worker/contracts/codec.py",
    "render (templates)": "worker/domain/templates.py",
    "compose (email)": "worker/domain/compose.py",
    "logging (structlog)": "structlog/",
    "crypto (aliases)": "worker/core/crypto.py",
    "timeline merge": "worker/domain/projection.py",
    "relay headers (parse)": "worker/domain/headers.py",
    "relay rewrite": "worker/domain/rewrite.py",
    "relay summary": "worker/domain/summary.py",
    "email package (stdlib)": "email/",
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _stack(env: BenchEnv) -> str:
    return "private" if env.stacks else "shared"


def _profile(worker: WorkerProcess, env: BenchEnv, stage: str, seconds: int) -> Any:
    out = env.workdir / f"{stage}.pyspy.txt"
    return out if worker.start_profile(out, seconds) else None


def _profile_summary(out: Any) -> dict[str, Any]:
    if out is None:
        return {}
    return {"top_self": top_frames(out), "inclusive": inclusive_share(out, HOTSPOTS)}


async def notifier(
    env: BenchEnv,
    n: int,
    *,
    limit_s: float,
    profile: bool,
    stage: str = "notifier",
    max_unrecorded: int = 1,
    upstream: str = "smtp-sink",
    replicas: int = 1,
    names: Names | None = None,
) -> dict[str, Any]:
    """Events/s from the first produce until the timeline holds 2n events (or `limit_s`).

    `max_unrecorded` is the worker's CT_NOTIFIER_MAX_UNRECORDED: 1 as deployed by default (at
    most one duplicate email per kill); more shows what that guarantee costs. `replicas`
    processes share the consumer group; the clock starts once they have split the partitions.
    `names` runs on a stage's topics and database made elsewhere (the backend comparison).
    """
    names = names or await env.create(env.names(stage, upstream))
    items = encoded(lifecycle_events(n, f"{env.run_id}{stage}"))
    worker_env = env.worker_env(names) | {"CT_NOTIFIER_MAX_UNRECORDED": str(max_unrecorded)}
    group = WorkerGroup("notifier", worker_env, env.workdir / f"{stage}.log", replicas)
    watcher = TopicWatcher(names.settings, names.timeline_topic)
    sink_before = names.upstream.accepted()
    try:
        await group.balanced(names.partitions)
        await watcher.start()
        ops0 = await db_ops.snapshot(names.settings)
        cpu0, started = group.cpu_seconds(), time.monotonic()
        prof = _profile(group.members[0], env, stage, 30) if profile else None
        produce_s = await produce_all(names.settings, names.order_topic, items)
        finished = await watcher.wait_for(2 * n, limit_s)
        elapsed = time.monotonic() - started
        done = watcher.count // 2
        cpu = group.cpu_seconds() - cpu0
        ops = db_ops.per_event(ops0, await db_ops.snapshot(names.settings), done, _stack(env))
        result: dict[str, Any] = {
            "mode": f"{replicas} x subprocess `ct run notifier`",
            "replicas": replicas,
            "upstream": names.upstream.name,
            "max_unrecorded": max_unrecorded,
            "events": n,
            "completed": done,
            "timed_out": not finished,
            "seconds": round(elapsed, 2),
            "rate": round(done / elapsed, 1),
            "produce_seconds": round(produce_s, 2),
            "worker_cpu_s": round(cpu, 2),
            "worker_cpu_share": round(cpu / elapsed, 2),
            "rss_kb": group.rss_kb(),
            "emails_at_upstream": names.upstream.accepted() - sink_before,
            "dlq": await topic_size(names.settings, names.settings.topic_dlq),
            "progress": [(round(t - started, 1), c // 2) for t, c in watcher.progress],
            "db_ops": ops,
        }
    finally:
        await watcher.stop()
        await group.stop()
    durations = [float(e["duration_ms"]) for e in group.lines("event_processed")]
    if durations:
        result["event_ms_p50"] = round(statistics.median(durations), 1)
        result["event_ms_p99"] = round(percentile(durations, 0.99), 1)
    result["profile"] = _profile_summary(prof)
    return result


async def latency(env: BenchEnv, *, rate: float, seconds: float) -> dict[str, Any]:
    """Steady `rate` events/s for `seconds`; each one's occurredAt is its send time.

    A fresh notifier on fresh topics, but on the notifier stage's database as that stage left
    it: no backlog in front of the probe events, and FerretDB as full as after the stage.
    Latency = arrival of its NOTIFICATION_SENT on the timeline topic (read by the bench with
    fetch_max_wait 10 ms) minus the moment the bench handed it to its producer. The projector
    is not in this path: it is measured on its own.
    """
    base = env.names("latency")
    db = env.names("notifier").settings.mongo_db
    settings = base.settings.model_copy(update={"mongo_db": db})
    names = await env.create(Names(base.prefix, settings, base.upstream))
    count = max(1, round(rate * seconds))
    worker = WorkerProcess("notifier", env.worker_env(names), env.workdir / "latency.log")
    watcher = TopicWatcher(names.settings, names.timeline_topic, from_end=True)
    client = producer(names.settings)
    waves = [(i, s) for s in LIFECYCLE for i in range(-(-count // len(LIFECYCLE)))][:count]
    pending = []
    try:
        await worker.assigned()
        await watcher.start()
        await client.start()
        started = time.monotonic()
        for k, (i, status) in enumerate(waves):
            delay = started + k / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            event = status_event(f"{names.prefix}-lat", i, status, at=now_utc())
            watcher.sent[event.event_id] = time.monotonic()
            value = CODEC.encode(event)
            pending.append(
                await client.send(names.order_topic, key=event.order_id.encode(), value=value)
            )
        await asyncio.gather(*pending)
        offered = count / (time.monotonic() - started)
        await poll_until(lambda: len(watcher.latencies) >= count, 120)
    finally:
        await client.stop()
        await watcher.stop()
        await worker.stop()
    values = watcher.latencies
    if not values:
        raise BenchError("latency run: no NOTIFICATION_SENT arrived within 120 s")
    return {
        "offered_rate": round(offered, 1),
        "events": count,
        "measured": len(values),
        "measured_at": "timeline topic (NOTIFICATION_SENT arrival - send time)",
        "p50_ms": round(percentile(values, 0.5) * 1000, 1),
        "p99_ms": round(percentile(values, 0.99) * 1000, 1),
        "max_ms": round(max(values) * 1000, 1),
    }


async def projector(
    env: BenchEnv,
    n: int,
    *,
    limit_s: float,
    profile: bool,
    batch: int | None,
    stage: str,
    replicas: int = 1,
    names: Names | None = None,
) -> dict[str, Any]:
    """Events/s from the first produce of n timeline events until all are merged.

    The `replicas` processes split the partitions before the first record is produced.
    "Merged" is read from the projectors' own `batch_projected` lines (logged after each
    bulk_write returned) and checked against committed offsets and the documents afterwards.
    `batch` overrides CT_BATCH_MAX_RECORDS. No new batch for STALL_S, or for three times the
    slowest batch so far if that is longer, means a worker is stuck (FerretDB wedged): the
    stage ends there and says so.
    """
    names = names or await env.create(env.names(stage))
    items = encoded_timeline(timeline_lifecycle(n, f"{env.run_id}{stage}"))
    worker_env = env.worker_env(names)
    if batch is not None:
        worker_env["CT_BATCH_MAX_RECORDS"] = str(batch)
    group = WorkerGroup("projector", worker_env, env.workdir / f"{stage}.log", replicas)
    progress: dict[str, Any] = {"merged": 0, "done_at": None, "moved": time.monotonic()}
    progress["stall_s"] = STALL_S

    def stall_s(lines: list[dict[str, Any]]) -> float:
        return max([STALL_S, *(3 * float(e["duration_ms"]) / 1000 for e in lines)])

    def merged_all() -> bool:
        lines = list(group.lines("batch_projected"))
        merged = sum(int(e["records"]) for e in lines)
        if merged > progress["merged"]:
            progress["merged"], progress["moved"] = merged, time.monotonic()
        if merged >= n:
            progress["done_at"] = max(
                datetime.fromisoformat(e["timestamp"]).timestamp() for e in lines
            )
            return True
        progress["stall_s"] = stall_s(lines)
        return time.monotonic() - float(progress["moved"]) > float(progress["stall_s"])

    try:
        await group.balanced(names.partitions)
        ops0 = await db_ops.snapshot(names.settings)
        cpu0, started = group.cpu_seconds(), time.time()
        prof = _profile(group.members[0], env, stage, 20) if profile else None
        await produce_all(names.settings, names.timeline_topic, items)
        progress["moved"] = time.monotonic()
        await poll_until(merged_all, limit_s, 0.25)
        merged, done_at = int(progress["merged"]), progress["done_at"]
        now = time.time()
        elapsed = (done_at or now) - started
        cpu = group.cpu_seconds() - cpu0
        ops1 = await db_ops.snapshot(names.settings)  # before the checks below read the orders
        offsets = await committed(names.settings, names.settings.group_projector)
    finally:
        await group.stop()
    batches = list(group.lines("batch_projected"))
    batch_ms = [float(e["duration_ms"]) for e in batches]
    stalled = done_at is None and time.monotonic() - progress["moved"] > progress["stall_s"]
    return {
        "mode": f"{replicas} x subprocess `ct run projector`",
        "replicas": replicas,
        "batch_max_records": batch or env.base.batch_max_records,
        "events": n,
        "completed": merged,
        "timed_out": done_at is None,
        "stalled": stalled,
        "seconds": round(elapsed, 2),
        "rate": round(merged / elapsed, 1),
        "worker_cpu_s": round(cpu, 2),
        "worker_cpu_share": round(cpu / max(now - started, 1e-3), 2),
        "committed_offsets": offsets,
        "entries_in_orders": None if stalled else await _entries(names),
        "batches": len(batches),
        "batch_ms_p50": round(statistics.median(batch_ms), 1) if batch_ms else None,
        "db_ops": db_ops.per_event(ops0, ops1, merged, _stack(env)),
        "profile": _profile_summary(prof),
    }


async def _entries(names: Names) -> int:
    """Timeline entries over all order documents: what "orders hold N entries" checks."""
    client = mongo.connect(names.settings, app_name="ct-bench")
    try:
        orders = client[names.settings.mongo_db]["orders"]
        async with asyncio.timeout(60):
            return sum(
                [int(d.get("entryCount", 0)) async for d in orders.find({}, {"entryCount": 1})]
            )
    finally:
        await client.close()
