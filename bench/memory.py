"""Notifier RSS after a small and a large number of events, in one long-running subprocess.

Events are fed in chunks that keep at most BACKLOG unprocessed ahead of the worker, so the
bench never holds the whole workload in memory and Kafka's lag stays realistic.

The events cycle through ORDERS orders (every status again and again, each event new). ORDERS
is twice the notifier's alias cache (CT_ALIAS_CACHE_SIZE, 2048), so the cache is full long
before the small mark and keeps evicting after it: growth between the marks is the worker's,
not a cache filling up. The `deliveries` ledger grows by one document per event.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

from bench.env import BenchEnv
from bench.kafka_io import TopicWatcher, produce_all
from bench.workers import WorkerProcess
from bench.workload import LIFECYCLE, encoded, status_event

CHUNK = 5_000
ORDERS = 4_096
BACKLOG = 20_000
SAMPLE_EVERY_S = 10.0


async def memory(env: BenchEnv, small: int, large: int, *, limit_s: float) -> dict[str, Any]:
    names = await env.create(env.names("memory"))
    worker = WorkerProcess("notifier", env.worker_env(names), env.workdir / "memory.log")
    watcher = TopicWatcher(names.settings, names.timeline_topic)
    plan = [(k % ORDERS, LIFECYCLE[k // ORDERS % len(LIFECYCLE)]) for k in range(large)]
    tag = f"{env.run_id}m"
    marks: dict[int, dict[str, Any]] = {}
    samples: list[dict[str, Any]] = []
    produced = 0
    try:
        await worker.assigned()
        await watcher.start()
        started = time.monotonic()
        deadline = started + limit_s
        next_sample = started
        while time.monotonic() < deadline:
            done = watcher.count // 2
            if produced < large and produced - done < BACKLOG:
                chunk = plan[produced : produced + CHUNK]
                items = encoded([status_event(tag, i, s) for i, s in chunk])
                await produce_all(names.settings, names.order_topic, items)
                produced += len(chunk)
            for mark in (small, large):
                if mark not in marks and done >= mark:
                    marks[mark] = _snapshot(worker, done, started)
            if time.monotonic() >= next_sample:
                samples.append(_snapshot(worker, done, started))
                next_sample += SAMPLE_EVERY_S
            if len(marks) == 2:
                break
            await watcher.wait_for(watcher.count + 1, 0.2)
        reached = _snapshot(worker, watcher.count // 2, started)
    finally:
        await watcher.stop()
        await worker.stop()
    first = marks.get(small)
    last = marks.get(large) or reached
    growth = round((last["rss_kb"] - first["rss_kb"]) / first["rss_kb"] * 100, 1) if first else None
    return {
        "mode": "subprocess `ct run notifier`",
        "small": small,
        "large": large,
        "timed_out": large not in marks,
        "at_small": first,
        "at_large": last,
        "growth_pct": growth,
        "samples": samples,
        "orders": ORDERS,
        "segment_rates": _segment_rates(samples),
    }


def _snapshot(worker: WorkerProcess, done: int, started: float) -> dict[str, Any]:
    memory = worker.memory_kb()
    return {
        "events": done,
        "seconds": round(time.monotonic() - started, 1),
        "rss_kb": memory.get("VmRSS", 0),
        "hwm_kb": memory.get("VmHWM", 0),
    }


def _segment_rates(samples: list[dict[str, Any]]) -> list[float]:
    """Events/s between consecutive samples: a falling curve means per-event cost grows."""
    rates = []
    for before, after in itertools.pairwise(samples):
        span = after["seconds"] - before["seconds"]
        if span > 0:
            rates.append(round((after["events"] - before["events"]) / span, 1))
    return rates
