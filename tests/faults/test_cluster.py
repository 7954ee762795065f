"""Scale-out on a real three-broker Kafka cluster: replicas join and leave, brokers die.

Part of `make test`; `make test-cluster` runs it alone (marked `cluster`). A private cluster
(`deploy/local/stack up` with CT_STACK_BROKERS=3, topics with a replica on every broker,
min.insync.replicas 2), 20,000 events on 12 partitions, three notifier and two projector
replicas, and the relay under load from SMTP clients the whole time. CT_CLUSTER_ORDERS (x 10
events), CT_CLUSTER_BUDGET_S and CT_FAULTS_SEED change the size, the time allowed and the plan.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests.faults.chaos import Chaos, supervised
from tests.faults.conftest import Pipeline
from tests.faults.evidence import (
    SinkTail,
    attribute_duplicates,
    count_mail,
    emailed,
    emit,
    expected_entries,
    order_events,
    out_of_order,
    read_orders,
    store_address,
    timeline_problems,
    write_report,
)
from tests.faults.procs import Run, Worker, WorkerPool
from tests.faults.senders import Senders, recipient_alias
from tests.faults.settle import wait_done
from tests.support.kafka import partition_leaders, under_replicated
from tests.support.polling import eventually
from worker.adapters import mongo
from worker.domain.compose import message_id_for

pytestmark = [pytest.mark.stack, pytest.mark.slow, pytest.mark.cluster]
ORDERS = int(os.environ.get("CT_CLUSTER_ORDERS", "2000"))
BUDGET_S = float(os.environ.get("CT_CLUSTER_BUDGET_S", "1200"))
EVENTS_PER_ORDER = 10
NOTIFIERS, PROJECTORS, RELAY_SENDERS = 3, 2, 3
BROKER_DOWN_S = 20.0


class Replicas:
    """The notifier's replicas as an orchestrator would scale them, under the supervisor."""

    def __init__(self, pool: WorkerPool, chaos: Chaos) -> None:
        self.pool, self.chaos = pool, chaos
        self.slots: list[Worker] = []

    async def scale_to(self, count: int) -> None:
        while len(self.slots) > count:  # scale in: a graceful stop, as `kubectl scale` does
            worker = self.slots.pop()
            self.chaos.workers.pop(f"notifier-{len(self.slots) + 1}", None)
            self.chaos.note("scale in: SIGTERM", worker="notifier", pid=worker.pid)
            worker.signal(signal.SIGTERM)
            code = await worker.wait_exit(30)
            assert code == 0, f"a notifier stopped by SIGTERM exited {code}: {worker.tail()}"
        while len(self.slots) < count:
            worker = self.pool.new("notifier")
            worker.start()
            await worker.ready(90)
            self.slots.append(worker)
            self.chaos.workers[f"notifier-{len(self.slots)}"] = worker
            self.chaos.note("scale out: ready", worker="notifier", pid=worker.pid)

    def runs(self) -> list[Run]:
        """Every notifier process of the test, scaled in, killed or still running."""
        return [r for worker in self.pool.workers if worker.kind == "notifier" for r in worker.runs]


async def _busiest_broker(pipeline: Pipeline) -> tuple[int, dict[int, int]]:
    s = pipeline.settings
    leaders = await partition_leaders(s, [s.topic_order_status, s.topic_timeline])
    node, _ = leaders.most_common(1)[0]
    return node, dict(leaders)


async def _stop_when_replicated(pipeline: Pipeline, chaos: Chaos, node: int) -> None:
    """Stop a broker the way an operator rolls a cluster: once every partition is fully
    replicated again (the restarted broker caught up), so that two brokers remain in sync."""
    s = pipeline.settings
    topics = [s.topic_order_status, s.topic_timeline, "__consumer_offsets"]
    await eventually(
        lambda: _none(under_replicated(s, topics)), timeout=120, interval=1, what="full ISRs"
    )
    chaos.note("every partition fully replicated")
    await chaos.stop_broker(node)


async def _none(count: Awaitable[int]) -> bool:
    return await count == 0


@pytest.mark.timeout(BUDGET_S + 180)
async def test_broker_failover_and_rebalances_lose_nothing_and_keep_each_orders_mail_in_order(
    cluster_pipeline: Pipeline,
    cluster_workers: WorkerPool,
    cluster_db: mongo.Database,
    tmp_path: Path,
) -> None:
    """Orders x 10 events through 3 notifier and 2 projector replicas while the relay forwards
    mail: the broker leading the most partitions is SIGKILLed and restarted 20 s later, the
    notifier is scaled 3 -> 1 -> 3, one notifier replica is SIGKILLed, and a second broker is
    stopped gracefully and stays down to the end.

    Then: every order's timeline holds exactly its 2 entries per event, once each; every event's
    email was accepted at least once; each extra copy was sent by a notifier process that ended
    abruptly, at most one per such process (reported); each order's emails reached the upstream
    in event order; every relayed message answered 250 is at the upstream.
    """
    pipeline, pool = cluster_pipeline, cluster_workers
    seed = int(os.environ.get("CT_FAULTS_SEED", random.randrange(1_000_000)))
    rng = random.Random(seed)
    run, domain = pipeline.run_id, pipeline.settings.domain
    events = order_events(run, ORDERS, EVENTS_PER_ORDER)
    # The relay's order: its own, so that its MESSAGE_FORWARDED entries stay out of the counts.
    (relay_event,) = order_events(f"{run}r", orders=1, per_order=1)
    sink = SinkTail.from_now(pipeline.stack.sink_dir)
    started = time.monotonic()
    await emit(pipeline.settings, [relay_event, *events])
    chaos = Chaos(
        pipeline.stack, {}, rng, progress=lambda: {"emailed": emailed(events, sink, domain)}
    )
    notifiers = Replicas(pool, chaos)
    await notifiers.scale_to(NOTIFIERS)
    for k, projector in enumerate(await pool.started(*["projector"] * PROJECTORS), 1):
        chaos.workers[f"projector-{k}"] = projector
    relay_mail = message_id_for(relay_event.event_id, domain)
    async with asyncio.timeout(120):
        while not sink.poll().get(relay_mail):
            await asyncio.sleep(0.3)
    (relay,) = await pool.started("relay")
    chaos.workers["relay"] = relay
    senders = Senders(
        relay.relay_port,
        store_address(f"{run}r", 0),
        recipient_alias(pipeline.stack.sink_dir, relay_mail),
    )
    threads = senders.start(RELAY_SENDERS)
    first, leaders_before = await _busiest_broker(pipeline)
    second = rng.choice([n for n in range(1, pipeline.stack.brokers + 1) if n != first])
    plan: list[Callable[[], Awaitable[None]]] = [
        lambda: chaos.kill_broker(first, down_s=BROKER_DOWN_S),
        lambda: notifiers.scale_to(1),
        lambda: notifiers.scale_to(NOTIFIERS),
        lambda: chaos.kill(f"notifier-{rng.randint(1, NOTIFIERS)}"),
        lambda: _stop_when_replicated(pipeline, chaos, second),
    ]
    try:
        async with supervised(chaos):
            await chaos.run_plan(plan, emails=(len(events) // 40, len(events) // 20))
            chaos.note("faults over")
            left = BUDGET_S - (time.monotonic() - started)
            settle = await wait_done(
                pipeline,
                cluster_db,
                events,
                sink,
                pool,
                timeout=max(left, 60),
                excluding=[relay_event.order_id],
            )
    finally:
        senders.stop.set()
        for thread in threads:
            await asyncio.to_thread(thread.join, 30)
    wall = time.monotonic() - started
    leaders_after = (await _busiest_broker(pipeline))[1]

    mail = count_mail(events, sink.poll(), domain)
    blame = attribute_duplicates(events, sink, domain, notifiers.runs())
    docs = await read_orders(cluster_db, {e.order_id for e in events})
    problems = timeline_problems(expected_entries(events), docs)
    disordered = out_of_order(events, sink, domain)
    relayed = {m for _, m in senders.accepted}
    deadline = time.monotonic() + 60
    while (lost := relayed - set(sink.poll())) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    report = {
        "seed": seed,
        "events": len(events),
        "orders": ORDERS,
        "partitions": pipeline.settings.topic_partitions,
        "wall_s": round(wall, 1),
        "settle_after_faults_s": round(settle, 1),
        "leaders_before": leaders_before,
        "leaders_after": leaders_after,
        "brokers_faulted": {"sigkilled": first, "stopped": second},
        "notifier_processes": len(notifiers.runs()),
        "kills": chaos.kills,
        "crashes": chaos.crashes,
        "duplicate_emails": mail.duplicates,
        "duplicates_per_abrupt_notifier_exit": blame.per_abrupt_exit,
        "unexplained_duplicates": blame.unexplained,
        "missing_emails": len(mail.missing),
        "timeline_problems": problems[:20],
        "orders_out_of_order": disordered[:20],
        "relay_answered_250": len(relayed),
        "relay_refusals_and_errors": dict(senders.failures),
        "relay_lost": sorted(lost)[:20],
        "faults": chaos.notes,
    }
    report_path = tmp_path / "cluster-report.json"
    write_report(report_path, report)
    summary = {k: v for k, v in report.items() if k != "faults"}
    print(f"\ncluster fault report {report_path}: {json.dumps(summary, default=str)}")

    assert mail.missing == [], f"{len(mail.missing)} events never emailed"
    assert problems == []
    assert blame.unexplained == [], report_path
    assert all(n <= 1 for n in blame.per_abrupt_exit), report_path
    assert disordered == [], report_path
    assert relayed, "the relay answered no message 250 during the run"
    assert not lost, f"{len(lost)} relayed messages answered 250 are not at the upstream"
