"""Waiting for a faulted pipeline to finish its work, or to show that it is stuck."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

from pymongo.errors import PyMongoError

from tests.faults.conftest import Pipeline
from tests.faults.evidence import SinkTail, emailed, entries_written, symptoms
from tests.faults.procs import WorkerPool
from worker.adapters import mongo
from worker.contracts.events import OrderStatusChanged


async def wait_done(
    pipeline: Pipeline,
    db: mongo.Database,
    events: list[OrderStatusChanged],
    sink: SinkTail,
    workers: WorkerPool,
    *,
    timeout: float,
    stall_s: float = 150,
    excluding: Sequence[str] = (),
) -> float:
    """Until every event is emailed and the timelines hold 2 entries per event; returns seconds.

    Fails early, with what the workers' logs keep repeating, once nothing moved for `stall_s`
    (longer than any fault or rebalance here lasts): a wedged worker must not cost the budget.
    Orders in `excluding` (written by others, the relay's) are not counted.
    """
    started = last_change = time.monotonic()
    mailed, written = 0, -1  # -1: not read yet (only once all mail is out)
    last = (mailed, written)
    while (now := time.monotonic()) - started < timeout:
        mailed = emailed(events, sink, pipeline.settings.domain)
        if mailed == len(events):
            # Reading every order costs FerretDB a full scan: only once the mail is all out.
            with contextlib.suppress(PyMongoError):  # FerretDB down: ask again later
                written = await entries_written(db, excluding)
            if written >= 2 * len(events):
                return now - started
        if (mailed, written) != last:
            last, last_change = (mailed, written), now
        elif now - last_change > stall_s:
            raise AssertionError(
                f"nothing moved for {stall_s:.0f}s: {_state(mailed, written, len(events))}; "
                "the workers keep logging:\n" + symptoms(workers.log_files())
            )
        await asyncio.sleep(2)
    raise AssertionError(
        f"after {timeout:.0f}s: {_state(mailed, written, len(events))}; "
        "the workers keep logging:\n" + symptoms(workers.log_files())
    )


def _state(mailed: int, written: int, events: int) -> str:
    entries = f"{written}/{2 * events}" if written >= 0 else "not read yet (mail first)"
    return f"{mailed}/{events} emailed, timeline entries {entries}"
