"""Suppression on the real database and in memory: one test body over both backends, so the
in-memory records the unit tests run on keep the adapter's rules (per order, per store when
enabled, idempotent, lifted whole)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest

from tests.memory.stores import MemorySuppressions
from worker.adapters import mongo
from worker.adapters.dialect import detect_dialect
from worker.adapters.suppressions import Suppressions
from worker.services.ports import SuppressionRecords

pytestmark = pytest.mark.stack
AT = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
Backend = Callable[[bool], Awaitable[SuppressionRecords]]


@pytest.fixture(params=["memory", "mongodb"])
def backend(request: pytest.FixtureRequest, db: mongo.Database) -> Backend:
    """Suppression records (store-wide or not), kept in memory or in the test's database."""
    if request.param == "memory":
        shared = MemorySuppressions(store_wide=False)

        async def memory(store_wide: bool) -> SuppressionRecords:
            # One store of records seen through either setting, as one collection is.
            view = MemorySuppressions(store_wide=store_wide)
            view.records = shared.records
            return view

        return memory

    async def real(store_wide: bool) -> SuppressionRecords:
        return Suppressions(db, await detect_dialect(db), store_wide=store_wide)

    return real


async def _suppress(store: SuppressionRecords, order_id: str, address_hash: str) -> None:
    await store.suppress(
        order_id=order_id, store_id="store-1", address_hash=address_hash, status="5.1.1",
        cause_event_id=f"bounce-of-{order_id}", at=AT,
    )  # fmt: skip


async def test_a_hard_bounce_suppresses_its_order_only_by_default(backend: Backend) -> None:
    store = await backend(False)
    await _suppress(store, "o-1", "hash-a")
    await _suppress(store, "o-1", "hash-a")  # the same bounce again: one record
    [found] = await store.active("o-1", "store-1", "hash-a")
    assert (found.scope, found.status, found.cause_event_id) == ("order", "5.1.1", "bounce-of-o-1")
    assert await store.active("o-2", "store-1", "hash-a") == []
    assert len(await store.active("o-1", "store-1", "hash-a", every=True)) == 1


async def test_store_wide_suppression_covers_the_stores_other_orders(backend: Backend) -> None:
    store = await backend(True)
    await _suppress(store, "o-1", "hash-a")
    [other_order] = await store.active("o-2", "store-1", "hash-a")
    assert other_order.scope == "store" and other_order.order_id == "o-1"
    assert await store.active("o-2", "store-1", "hash-b") == []  # another customer
    assert await store.active("o-2", "store-2", "hash-a") == []  # another store
    # The setting off again: store-wide records are kept, but only operators see them.
    narrow = await backend(False)
    assert await narrow.active("o-2", "store-1", "hash-a") == []
    assert len(await narrow.active("o-2", "store-1", "hash-a", every=True)) == 1
    lifted = await narrow.lift("o-1", "store-1", "hash-a")
    assert sorted(s.scope for s in lifted) == ["order", "store"]
    assert await store.active("o-1", "store-1", "hash-a") == []


async def test_many_customers_at_once_read_as_each_would_alone(backend: Backend) -> None:
    store = await backend(True)
    await _suppress(store, "o-1", "hash-a")
    customers = [
        ("o-1", "store-1", "hash-a"),  # its own order's record and the store-wide one
        ("o-2", "store-1", "hash-a"),  # the same customer, another order: store-wide
        ("o-3", "store-1", "hash-b"),  # another customer: none
        ("o-4", "store-2", "hash-a"),  # another store: none
    ]
    together = await store.active_many(customers)
    assert together == [await store.active(*customer) for customer in customers]
    assert [len(found) for found in together] == [2, 1, 0, 0]
    assert await store.active_many([]) == []
