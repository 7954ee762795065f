"""CustomerSuppression's batch read for a poll's orders: the same answers as one order at a time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.memory.stores import MemoryAliases, MemorySuppressions
from tests.support.clock import MovableClock
from worker.contracts.events import DeliveryReport, FailureType, ParticipantRole, ReportSource
from worker.services.suppression import CustomerSuppression

AT = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
HARD = DeliveryReport(
    failure_type=FailureType.HARD_BOUNCE, source=ReportSource.DSN, status="5.1.1", diagnostic="x"
)


async def _bounce(service: CustomerSuppression, order_id: str, address: str, at: datetime) -> None:
    await service.after_failure(
        HARD, to=ParticipantRole.CUSTOMER, order_id=order_id, store_id="store-1",
        address=address, cause_event_id=f"dsn-{order_id}", at=at,
    )  # fmt: skip


async def test_a_polls_orders_read_together_answer_as_each_order_alone() -> None:
    service = CustomerSuppression(
        MemorySuppressions(store_wide=True), MemoryAliases(MovableClock()), store_wide=True
    )
    await _bounce(service, "o-2", "jane@example.org", AT - timedelta(days=1))  # store-wide first
    await _bounce(service, "o-1", "jane@example.org", AT)
    customers = {
        "o-1": ("store-1", "jane@example.org"),  # its own and the store-wide (earlier) record
        "o-3": ("store-1", "Jane@Example.org "),  # another order of the same customer
        "o-4": ("store-1", "john@example.org"),  # another customer
        "o-5": ("store-2", "jane@example.org"),  # another store
    }
    together = await service.in_force_for_orders(customers)
    alone = {o: await service.in_force(o, *customer) for o, customer in customers.items()}
    assert together == alone
    assert together["o-1"] is not None and together["o-1"].cause_event_id == "dsn-o-2"
    assert together["o-3"] is not None
    assert together["o-4"] is None and together["o-5"] is None
    assert await service.in_force_for_orders({}) == {}
