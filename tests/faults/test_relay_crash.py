"""The relay as a real `ct run relay` process, SIGKILLed while clients keep sending to it."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from tests.faults.conftest import Pipeline
from tests.faults.evidence import SinkTail, customer_address, emit, order_events, store_address
from tests.faults.procs import WorkerPool
from tests.faults.senders import Senders, recipient_alias
from worker.domain.compose import message_id_for

pytestmark = [pytest.mark.stack, pytest.mark.slow]


async def test_a_relay_killed_mid_session_never_loses_a_message_it_answered_250_for(
    pipeline: Pipeline, workers: WorkerPool
) -> None:
    """Store mail to the customer alias from 4 concurrent senders; the relay is SIGKILLed once and
    restarted. Every message the relay answered 250 for must be in the upstream (the sink)."""
    run = pipeline.run_id
    (event,) = order_events(run, orders=1, per_order=1)
    sink = SinkTail.from_now(pipeline.stack.sink_dir)
    await emit(pipeline.settings, [event])
    (notifier,) = await workers.started("notifier")
    notification = message_id_for(event.event_id, pipeline.settings.domain)
    async with asyncio.timeout(60):
        while not sink.poll().get(notification):
            await asyncio.sleep(0.3)
    customer_alias = recipient_alias(pipeline.stack.sink_dir, notification)

    (relay,) = await workers.started("relay")
    senders = Senders(relay.relay_port, store_address(run, 0), customer_alias)
    threads = senders.start()
    try:
        await asyncio.sleep(4)
        killed_at = time.monotonic()
        relay.signal(signal.SIGKILL)
        await relay.wait_exit(10)
        await asyncio.sleep(1)
        await relay.restart()
        await asyncio.sleep(5)
    finally:
        senders.stop.set()
        for thread in threads:
            await asyncio.to_thread(thread.join, 30)

    before = [m for at, m in senders.accepted if at < killed_at]
    after = [m for at, m in senders.accepted if at >= killed_at]
    failures = dict(senders.failures)
    print(f"\nrelay kill: {len(before)} answered 250 before, {len(after)} after; {failures}")
    assert before and after, "the senders must have been answered on both sides of the kill"
    deadline = time.monotonic() + 30
    while missing := {m for _, m in senders.accepted} - set(sink.poll()):
        assert time.monotonic() < deadline, f"{len(missing)} messages answered 250 are lost"
        await asyncio.sleep(0.5)
    leaked = customer_address(run, 0)
    assert all(leaked not in path.read_text() for path in workers.log_files())
    assert notifier.running
