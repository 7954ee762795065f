"""Scale-out rows (1, 2, 3 replicas of the notifier and the projector) and the database backends.

On 2 cores, replicas compete for the same CPU as Kafka, FerretDB and the upstream, so each row
keeps the CPU seconds per event of every component: that is where the bound shows.
"""

from __future__ import annotations

import os
import statistics
import time
from datetime import UTC, datetime
from functools import partial
from typing import Any

from bench import ceilings, stages
from bench.env import BenchEnv, Names
from bench.kafka_io import TopicWatcher, produce_all
from bench.steps import step
from bench.workload import encoded, lifecycle_events
from worker.adapters import mongo
from worker.adapters.deliveries import Delivery, DeliveryLedger
from worker.adapters.dialect import detect_dialect
from worker.adapters.messages import MessageStore
from worker.core.crypto import AddressCipher
from worker.domain.aliases import SystemClock

REPLICAS = (1, 2, 3)
# A multiple of every replica count: each replica gets the same share.
PARTITIONS = 12
LEDGER_WRITES = 2_000
EMAIL_BYTES = 3_914  # the bench's average notification


async def scale_out(results: dict[str, Any], env: BenchEnv, n: int, *, limit_s: float) -> None:
    """Each row on topics of PARTITIONS partitions with a replica on every broker (up to 3)."""
    await step(env, results, "diagnostics", "cluster_warm_up", partial(warm_up, env, n))
    for kind in ("notifier", "projector"):
        for replicas in REPLICAS:
            stage = f"{kind}_x{replicas}"
            names = await env.create(env.names(stage), PARTITIONS, replication=3)
            run = stages.notifier if kind == "notifier" else partial(stages.projector, batch=None)
            work = partial(run, env, n, limit_s=limit_s, profile=False, stage=stage, names=names)
            await step(env, results, "scale_out", stage, partial(work, replicas=replicas))
    results["scale_out_summary"] = summarise(results)


async def warm_up(env: BenchEnv, n: int) -> dict[str, Any]:
    """Records through freshly started brokers before the rows: a new JVM compiles its hot
    paths during its first minute of load, and that CPU would count against the first row."""
    names = await env.create(env.names("warmup"), PARTITIONS, replication=3)
    items = encoded(lifecycle_events(max(n, 10_000), f"{env.run_id}warm"))
    watcher = TopicWatcher(names.settings, names.order_topic)
    started = time.monotonic()
    await watcher.start()
    try:
        for _ in range(3):
            await produce_all(names.settings, names.order_topic, items)
        await watcher.wait_for(3 * len(items), 300)
    finally:
        await watcher.stop()
    return {"records": watcher.count, "seconds": round(time.monotonic() - started, 1)}


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """Per worker: rate per replica count, efficiency against k x one replica, the gain of each
    added replica, and CPU milliseconds per event of each component."""
    rows = results.get("scale_out", {})
    summary: dict[str, Any] = {
        "brokers": results["meta"].get("brokers_scale_out"),
        "partitions": PARTITIONS,
        "replication": min(3, results["meta"].get("brokers_scale_out") or 1),
    }
    for kind in ("notifier", "projector"):
        one = _rate(rows.get(f"{kind}_x1"))
        lines = []
        previous = None
        for replicas in REPLICAS:
            name = f"{kind}_x{replicas}"
            rate = _rate(rows.get(name))
            lines.append(
                {
                    "replicas": replicas,
                    "rate": rate,
                    "efficiency": round(rate / (replicas * one), 2) if rate and one else None,
                    "added_replica_gain": round((rate - previous) / one, 2)
                    if rate and one and previous
                    else None,
                    "cpu_ms_per_event": cpu_per_event(results, name),
                }
            )
            previous = rate
        summary[kind] = lines
    return summary


def cpu_per_event(results: dict[str, Any], name: str) -> dict[str, float] | None:
    """CPU milliseconds per completed event: the workers' own, then each server's in the step."""
    section = next(
        (
            s[name]
            for s in (results.get(k, {}) for k in ("stages", "scale_out", "backends"))
            if name in s
        ),
        None,
    )
    done = section.get("completed") or section.get("forwarded_at_upstream") if section else None
    if not section or not done:
        return None
    used = {"workers": float(section.get("worker_cpu_s") or 0.0)}
    used |= results.get("resources", {}).get(name, {}).get("cpu_s", {})
    return {k: round(v * 1000 / done, 2) for k, v in used.items() if v}


def _rate(section: Any) -> float | None:
    rate = section.get("rate") if isinstance(section, dict) else None
    return float(rate) if isinstance(rate, int | float) else None


async def backends(results: dict[str, Any], env: BenchEnv, n: int, *, limit_s: float) -> None:
    """FerretDB on SQLite against FerretDB on PostgreSQL, in the same run: the notifier's ledger
    writes alone, then the notifier and the projector as processes, and the projector's raw
    document writes. Only where the bench started both (its private stack)."""
    if len(env.mongo_backends) < 2:
        results["backends"] = {"skipped": "one database backend (the private stack has two)"}
        return
    for backend in env.mongo_backends:
        names = await ledger(results, env, backend)
        notifier = f"notifier_{backend}"
        run = partial(stages.notifier, env, n, limit_s=limit_s, profile=False, stage=notifier)
        await step(env, results, "backends", notifier, partial(run, names=names))
        projector = await env.create(env.names(f"pr_{backend}", mongo_backend=backend))
        stage = f"projector_{backend}"
        await step(
            env,
            results,
            "backends",
            stage,
            partial(
                stages.projector,
                env,
                n,
                limit_s=limit_s,
                profile=False,
                batch=None,
                stage=stage,
                names=projector,
            ),
        )
        raw = await env.create(env.names(f"pw_{backend}", mongo_backend=backend))
        await step(
            env,
            results,
            "backends",
            f"projector_writes_{backend}",
            partial(ceilings.projector_writes, raw.settings, n, env.base.batch_max_records),
        )


async def ledger(results: dict[str, Any], env: BenchEnv, backend: str) -> Names:
    """The `ledger_<backend>` step: the notifier's one write per email on that backend."""
    names = await env.create(env.names(f"be_{backend}", mongo_backend=backend))
    await step(env, results, "backends", f"ledger_{backend}", partial(ledger_writes, names))
    return names


async def ledger_writes(names: Names) -> dict[str, Any]:
    """The notifier's one write per email (the email kept with its outcome), one at a time as
    the one-duplicate turn makes it: each insert's latency bounds the notifier to
    1 / (end-of-DATA latency + this) emails per second."""
    client = mongo.connect(names.settings, app_name="ct-bench")
    db = client[names.settings.mongo_db]
    dialect = await detect_dialect(db, names.settings.mongo_dialect)
    messages = MessageStore(
        db,
        AddressCipher([os.urandom(32)]),  # the bench's own: what it seals is never read
        retention_days=names.settings.message_retention_days,
        clock=SystemClock(),
        dialect=dialect,
    )
    ledger = DeliveryLedger(db, dialect=dialect, messages=messages)
    email = os.urandom(EMAIL_BYTES // 2).hex().encode()
    timeline = [{"eventId": "x" * 36, "kind": "STATUS_CHANGED", "payload": "y" * 600}] * 2
    latencies: list[float] = []
    try:
        await mongo.ensure_indexes(db)
        started = time.perf_counter()
        for k in range(LEDGER_WRITES):
            at = datetime.now(UTC)
            delivery = Delivery(f"{names.prefix}-{k:07d}", f"o-{k // 5}", True, at, timeline)
            kept = await messages.seal(
                event_id=f"m-{delivery.event_id}", order_id=delivery.order_id, store_id="s",
                raw=email,
            )  # fmt: skip
            before = time.perf_counter()
            await ledger.record_sent(delivery, kept)
            latencies.append(time.perf_counter() - before)
        elapsed = time.perf_counter() - started
    finally:
        await client.close()
    ordered = sorted(latencies)
    return {
        "writes": LEDGER_WRITES,
        "rate": round(LEDGER_WRITES / elapsed),
        "ms_p50": round(statistics.median(latencies) * 1000, 2),
        "ms_p99": round(ordered[int(0.99 * (len(ordered) - 1))] * 1000, 2),
    }
