"""What the fault tests feed in and what they read back: events, mail, timelines, logs."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tests.faults.procs import Run
from tests.helpers import CODEC, produce
from tests.support.events import T0, order_event
from worker.adapters import mongo
from worker.adapters.kafka_client import client_options
from worker.contracts.events import OrderStatus, OrderStatusChanged, TimelineKind
from worker.core.config import Settings
from worker.domain.compose import message_id_for
from worker.domain.notifications import derived_event_id, status_changed

# Every status that has an email; a 10-event order walks through them and wraps around.
STATUSES = [s for s in OrderStatus if s != OrderStatus.UNKNOWN]
# A stop or a rebalance whose grace ran out abandons the batches in flight (batch_consumer.py).
ABANDONED = frozenset({"batch_abandoned_at_shutdown", "batch_abandoned_at_rebalance"})
EMAIL_LIKE = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~\-]+@[A-Za-z0-9.\-]+")


def customer_address(run: str, n: int) -> str:
    return f"buyer.{run}.{n:05d}@example.org"


STORE_DOMAINS = 7


def store_address(run: str, n: int) -> str:
    return f"seller.{run}.{n:05d}@shop{n % STORE_DOMAINS}.example.net"


def order_id(run: str, n: int) -> str:
    return f"o-{run}-{n:05d}"


def order_events(run: str, orders: int, per_order: int) -> list[OrderStatusChanged]:
    """`orders` x `per_order` events; every order has its own customer and store address."""
    return [
        order_event(
            order_id(run, n),
            STATUSES[(n + i) % len(STATUSES)],
            store_id=f"store-{n % 13}",
            at=T0 + timedelta(minutes=i),
            customer_email=customer_address(run, n),
            store_email=store_address(run, n),
            locale="pt-BR" if n % 3 == 0 else "en",
        )
        for n in range(orders)
        for i in range(per_order)
    ]


def real_addresses(run: str, orders: int) -> set[str]:
    return {customer_address(run, n) for n in range(orders)} | {
        store_address(run, n) for n in range(orders)
    }


async def emit(settings: Settings, events: Sequence[OrderStatusChanged]) -> None:
    """Produce with an idempotent producer, keyed by order id (one partition per order)."""
    await produce(
        settings, settings.topic_order_status, [(e.order_id, CODEC.encode(e)) for e in events]
    )


async def produce_located(
    settings: Settings, topic: str, items: Sequence[tuple[bytes, bytes]]
) -> list[tuple[int, int]]:
    """Send (key, value) pairs in order; returns each one's (partition, offset)."""
    producer: AIOKafkaProducer[bytes, bytes] = AIOKafkaProducer(
        **client_options(settings), enable_idempotence=True
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, key=k, value=v) for k, v in items]
        return [(m.partition, m.offset) for m in [await f for f in futures]]
    finally:
        await producer.stop()


async def whole_topic(settings: Settings, topic: str, *, timeout: float = 30) -> list[Any]:
    """Every record of a topic up to its current end, read without a consumer group."""
    consumer: AIOKafkaConsumer[bytes, bytes] = AIOKafkaConsumer(
        topic,
        **client_options(settings),
        group_id=None,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        records: list[Any] = []
        async with asyncio.timeout(timeout):
            while not consumer.assignment():  # without a group: every partition, once known
                await asyncio.sleep(0.1)
            ends = await consumer.end_offsets(list(consumer.assignment()))
            for tp, end in ends.items():
                while await consumer.position(tp) < end:
                    for batch in (await consumer.getmany(tp, timeout_ms=300)).values():
                        records += batch
        return records
    finally:
        await consumer.stop()


def expected_entries(events: Iterable[OrderStatusChanged]) -> dict[str, set[str]]:
    """Per order, the timeline entry ids the pipeline must produce: two per input event."""
    wanted: dict[str, set[str]] = {}
    for event in events:
        wanted.setdefault(event.order_id, set()).update(
            {status_changed(event).event_id, derived_event_id(event.event_id, "NOTIFICATION")}
        )
    return wanted


@dataclass
class OrderDoc:
    entry_ids: list[str]
    entry_count: int
    kinds: Counter[str]


async def read_orders(db: mongo.Database, order_ids: Iterable[str]) -> dict[str, OrderDoc]:
    wanted = list(order_ids)
    docs: dict[str, OrderDoc] = {}
    for start in range(0, len(wanted), 500):
        async for doc in db["orders"].find(
            {"_id": {"$in": wanted[start : start + 500]}}, {"timeline": 1, "entryCount": 1}
        ):
            timeline = doc.get("timeline") or []
            docs[doc["_id"]] = OrderDoc(
                [e["eventId"] for e in timeline],
                int(doc.get("entryCount", -1)),
                Counter(str(e["kind"]) for e in timeline),
            )
    return docs


async def entries_written(db: mongo.Database, excluding: Iterable[str] = ()) -> int:
    """Sum of every order's entryCount but those `excluding`: the projector's progress."""
    skipped = set(excluding)
    total = 0
    async for doc in db["orders"].find({}, {"entryCount": 1}):
        if doc["_id"] not in skipped:
            total += int(doc.get("entryCount", 0))
    return total


def timeline_problems(wanted: dict[str, set[str]], docs: dict[str, OrderDoc]) -> list[str]:
    """Every way the orders differ from exactly-the-expected-entries-once (empty: all good)."""
    problems: list[str] = []
    for oid, ids in sorted(wanted.items()):
        doc = docs.get(oid)
        if doc is None:
            problems.append(f"{oid}: no order document")
            continue
        found = set(doc.entry_ids)
        if missing := ids - found:
            problems.append(f"{oid}: {len(missing)} entries missing")
        if extra := found - ids:
            problems.append(f"{oid}: {len(extra)} unexpected entries")
        if len(doc.entry_ids) != len(found):
            problems.append(f"{oid}: {len(doc.entry_ids) - len(found)} duplicate entries")
        if doc.entry_count != len(found):
            problems.append(f"{oid}: entryCount {doc.entry_count} != {len(found)} distinct")
        if doc.kinds[TimelineKind.DELIVERY_FAILED] != 0:
            problems.append(f"{oid}: {doc.kinds[TimelineKind.DELIVERY_FAILED]} DELIVERY_FAILED")
    return problems


@dataclass
class SinkTail:
    """Reads the sink's index.jsonl from where it stood when the test began."""

    directory: Path
    offset: int = 0
    by_message_id: Counter[str] = field(default_factory=Counter)
    received: dict[str, list[float]] = field(default_factory=dict)  # epoch seconds per copy

    @classmethod
    def from_now(cls, directory: Path) -> SinkTail:
        index = directory / "index.jsonl"
        return cls(directory, index.stat().st_size if index.exists() else 0)

    def poll(self) -> Counter[str]:
        index = self.directory / "index.jsonl"
        if not index.exists():
            return self.by_message_id
        with index.open("rb") as lines:
            lines.seek(self.offset)
            data = lines.read()
        complete = data[: data.rfind(b"\n") + 1]  # a line being written is read next time
        self.offset += len(complete)
        for line in complete.splitlines():
            if line.strip():
                entry = json.loads(line)
                message_id = entry.get("headers", {}).get("Message-ID", "")
                self.by_message_id[message_id] += 1
                at = datetime.fromisoformat(entry["receivedAt"]).timestamp()
                self.received.setdefault(message_id, []).append(at)
        return self.by_message_id


@dataclass(frozen=True)
class MailCount:
    missing: list[str]
    duplicates: int
    duplicated_events: list[str]


def count_mail(
    events: Sequence[OrderStatusChanged], by_message_id: Counter[str], domain: str
) -> MailCount:
    """Which events have no accepted email, and how many extra copies the others got."""
    missing: list[str] = []
    duplicated: list[str] = []
    duplicates = 0
    for event in events:
        copies = by_message_id.get(message_id_for(event.event_id, domain), 0)
        if copies == 0:
            missing.append(event.event_id)
        elif copies > 1:
            duplicated.append(event.event_id)
            duplicates += copies - 1
    return MailCount(missing, duplicates, duplicated)


@dataclass(frozen=True)
class Attribution:
    per_abrupt_exit: list[int]  # duplicates re-sent because of each process that died, in order
    unexplained: list[str]  # event ids whose extra copy no such death accounts for


def attribute_duplicates(
    events: Sequence[OrderStatusChanged], sink: SinkTail, domain: str, runs: Sequence[Run]
) -> Attribution:
    """Blame each extra copy of an email on a notifier process that could have sent it.

    A copy is explained when a process that was running when the sink accepted it then died
    (SIGKILL, an exit with an error, or a stop that abandoned its batch when its grace ran out)
    without logging the event as processed: it died between
    the upstream's 250 and the ledger write, the one window the ledger cannot cover. `runs` may
    overlap in time (replicas): among the candidates, the copy goes to the one blamed least so
    far, so that a process is blamed for two only when no other could have sent either.
    """
    scans = [read_logs([run.log]) for run in runs]
    logged = [{line["event_id"] for line in processed_lines(scan)} for scan in scans]
    # An abandoned batch: an email in its turn may be left unrecorded (ABANDONED).
    cut = [run.abrupt or _abandoned(scan) for run, scan in zip(runs, scans, strict=True)]
    per_run = [0] * len(runs)
    unexplained: list[str] = []
    for event in events:
        copies = sorted(sink.received.get(message_id_for(event.event_id, domain), []))
        for at in copies[:-1]:  # every copy but the last needs a crash to account for it
            candidates = [
                i
                for i, run in enumerate(runs)
                if cut[i]
                and run.started <= at <= (run.ended or at) + 0.5
                and event.event_id not in logged[i]
            ]
            if not candidates:
                unexplained.append(event.event_id)
                continue
            blamed = min(candidates, key=lambda i: (per_run[i], runs[i].ended or at))
            per_run[blamed] += 1
    return Attribution([n for n, c in zip(per_run, cut, strict=True) if c], unexplained)


def _abandoned(scan: LogScan) -> bool:
    return any(line.get("event") in ABANDONED for line in scan.lines)


def out_of_order(events: Sequence[OrderStatusChanged], sink: SinkTail, domain: str) -> list[str]:
    """Orders whose emails the upstream first accepted in another order than their events'.

    `events` lists each order's events in the order they were produced (one partition per
    order). A notifier sends an order's next email only once the previous one is accepted and
    recorded, so the first copies must arrive in that order even across kills and rebalances.
    """
    by_order: dict[str, list[float]] = {}
    for event in events:
        copies = sink.received.get(message_id_for(event.event_id, domain), [])
        by_order.setdefault(event.order_id, []).append(min(copies, default=float("inf")))
    return [order for order, firsts in by_order.items() if any(b < a for a, b in pairwise(firsts))]


def emailed(events: Sequence[OrderStatusChanged], sink: SinkTail, domain: str) -> int:
    counts = sink.poll()
    return sum(1 for e in events if counts.get(message_id_for(e.event_id, domain), 0) > 0)


@dataclass
class LogScan:
    lines: list[dict[str, Any]]
    unparsed: list[str]


def read_logs(paths: Iterable[Path]) -> LogScan:
    """Every JSON line of the workers' logs. A line cut short by SIGKILL is kept as unparsed."""
    scan = LogScan([], [])
    for path in paths:
        for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if not raw.strip():
                continue
            try:
                scan.lines.append(json.loads(raw))
            except json.JSONDecodeError:
                scan.unparsed.append(f"{path.name}: {raw[:200]}")
    return scan


def symptoms(paths: Iterable[Path], tail: int = 300) -> str:
    """The warnings and errors each log repeats at its end, most frequent first."""
    out: list[str] = []
    for path in paths:
        recent = read_logs([path]).lines[-tail:]
        seen = Counter(
            f"{line.get('level')} {str(line.get('event'))[:100]} "
            f"{line.get('operation', '')} {line.get('error', '')}".rstrip()
            for line in recent
            if line.get("level") in {"warning", "error", "critical"}
        )
        top = "; ".join(f"{n}x {what}" for what, n in seen.most_common(3)) or "no warnings"
        out.append(f"  {path.name}: {top}")
    return "\n".join(out)


def address_leaks(paths: Iterable[Path], run: str, addresses: set[str]) -> list[str]:
    """Log lines holding a real address, or any piece of one (their local parts are unique)."""
    marker = re.compile(rf"(buyer|seller)\.{re.escape(run)}\.")
    leaks: list[str] = []
    for path in paths:
        for number, line in enumerate(path.read_text("utf-8", errors="replace").splitlines(), 1):
            lowered = line.lower()
            hit = marker.search(lowered) or any(
                token in addresses for token in EMAIL_LIKE.findall(lowered)
            )
            if hit:
                leaks.append(f"{path.name}:{number}: {line[:200]}")
    return leaks


def processed_lines(scan: LogScan) -> list[dict[str, Any]]:
    return [line for line in scan.lines if line.get("event") == "event_processed"]


def write_report(path: Path, report: dict[str, Any]) -> None:
    path.write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n", "utf-8")
