"""The notifier's scenarios on in-memory ports: no server, milliseconds each.

tests/integration/test_notifier.py and test_bounce_intake.py run the same scenarios against the
real Kafka, FerretDB and SMTP servers.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.memory.harness import Ports, notifier, record
from tests.support.events import order_event
from worker.contracts.events import FailureType, OrderStatus, TimelineKind
from worker.domain.notifications import notification_event_id

CUSTOMER = "jane.roe@example.org"


async def test_a_redelivered_event_sends_no_second_email_and_republishes_the_same_events() -> None:
    ports = Ports()
    event = order_event("o-redeliver")
    await notifier(ports).handle([record(event), record(event, offset=1)])  # twice in a batch
    first = list(ports.producer.sent)
    # Redelivered after a restart that lost its offsets: a new notifier, the same ledger.
    await notifier(ports).handle([record(event, offset=2)])
    assert len(ports.upstream.delivered) == 1
    assert [e.kind for e in ports.timeline()] == [
        TimelineKind.STATUS_CHANGED, TimelineKind.NOTIFICATION_SENT,
    ] * 2  # fmt: skip
    assert ports.producer.sent[len(first) :] == first  # byte for byte the recorded events


async def test_the_email_goes_from_the_store_alias_to_the_real_address_with_its_verp_path() -> None:
    ports = Ports()
    event = order_event("o-sent")
    await notifier(ports).handle([record(event)])
    [delivered] = ports.upstream.delivered
    assert delivered.recipients == [CUSTOMER]
    assert delivered.sender.startswith("bounces+")
    assert delivered.raw.startswith(b"DKIM-Signature:")
    assert CUSTOMER.encode() not in delivered.raw  # only the envelope carries the address
    kept = ports.messages.kept[notification_event_id(event.event_id)]
    assert kept.raw == delivered.raw  # kept before sending, exactly as sent


async def test_an_upstream_4xx_is_retried_until_it_is_sent_once() -> None:
    ports = Ports()
    ports.upstream.refuse("451 4.3.0 Try again later", "421 4.4.2 Timeout")
    await notifier(ports).handle([record(order_event("o-451"))])
    assert ports.upstream.attempts == 3
    assert len(ports.upstream.delivered) == 1
    assert [e.kind for e in ports.timeline()][-1] is TimelineKind.NOTIFICATION_SENT


async def test_an_upstream_5xx_is_recorded_as_delivery_failed_and_not_retried() -> None:
    ports = Ports()
    ports.upstream.refuse("554 5.7.1 Message refused")
    event = order_event("o-554")
    await notifier(ports).handle([record(event)])
    assert ports.upstream.attempts == 1 and ports.upstream.delivered == []
    failed = ports.timeline()[-1]
    assert failed.kind is TimelineKind.DELIVERY_FAILED and failed.delivery is not None
    assert failed.delivery.status == "5.7.1"
    assert ports.ledger.outcomes[event.event_id].sent is False
    assert ports.records.records == {}  # a refusal of this message, not of the address


async def test_no_such_user_suppresses_the_orders_later_events_in_the_same_batch() -> None:
    ports = Ports()
    ports.upstream.refuse("550 5.1.1 <jane.roe@example.org>: no such user")
    first = order_event("o-550", OrderStatus.PAYMENT_APPROVED)
    later = order_event("o-550", OrderStatus.HANDLING)
    await notifier(ports).handle([record(first), record(later, offset=1)])
    assert ports.upstream.attempts == 1  # the second event was never offered to the upstream
    kinds = [e.kind for e in ports.timeline()]
    assert kinds == [
        TimelineKind.STATUS_CHANGED, TimelineKind.DELIVERY_FAILED,
        TimelineKind.STATUS_CHANGED, TimelineKind.DELIVERY_FAILED,
    ]  # fmt: skip
    refused, suppressed = ports.timeline()[1], ports.timeline()[3]
    assert refused.delivery is not None and CUSTOMER not in (refused.delivery.diagnostic or "")
    assert suppressed.message is not None and suppressed.message.reason == "suppressed"
    assert suppressed.delivery is not None
    assert suppressed.delivery.failure_type is FailureType.SUPPRESSED


async def test_a_suppressed_customer_gets_delivery_failed_suppressed_until_it_is_lifted() -> None:
    ports = Ports()
    event = order_event("o-suppressed")
    await ports.records.suppress(
        order_id="o-suppressed", store_id="store-1",
        address_hash=ports.aliases.address_hash(CUSTOMER), status="5.1.1",
        cause_event_id="bounce-1", at=datetime(2026, 11, 1, tzinfo=UTC),
    )  # fmt: skip
    await notifier(ports).handle([record(event)])
    assert ports.upstream.delivered == []
    failed = ports.timeline()[-1]
    assert failed.kind is TimelineKind.DELIVERY_FAILED and failed.delivery is not None
    assert failed.delivery.failure_type is FailureType.SUPPRESSED
    assert failed.delivery.status == "5.1.1" and "2026-11-01" in (failed.delivery.diagnostic or "")

    lifted = await ports.suppression.lift("o-suppressed", "store-1")
    assert [s.status for s in lifted] == ["5.1.1"]
    await notifier(ports).handle([record(order_event("o-suppressed", OrderStatus.HANDLING))])
    assert len(ports.upstream.delivered) == 1


async def test_an_undecodable_record_is_dead_lettered_and_the_rest_of_the_batch_goes_on() -> None:
    ports = Ports()
    await notifier(ports).handle([record(b"not avro"), record(order_event("o-ok"), offset=1)])
    [(dead, reason)] = ports.dead_letters.published
    assert dead.value == b"not avro" and reason
    assert len(ports.upstream.delivered) == 1


async def test_an_orders_events_are_emailed_in_their_order_while_orders_run_side_by_side() -> None:
    ports = Ports()
    statuses = [OrderStatus.PAYMENT_APPROVED, OrderStatus.HANDLING, OrderStatus.SHIPPED]
    events = [order_event(o, s) for s in statuses for o in ("o-a", "o-b")]
    await notifier(ports).handle([record(e, offset=i) for i, e in enumerate(events)])
    status_of = {
        ports.messages.kept[notification_event_id(e.event_id)].raw: (e.order_id, e.status)
        for e in events
    }
    emailed = [status_of[d.raw] for d in ports.upstream.delivered]
    for order_id in ("o-a", "o-b"):
        assert [s for o, s in emailed if o == order_id] == statuses


async def test_overlapping_polls_email_an_order_in_its_order_and_a_redelivered_event_once() -> None:
    """The consumer hands the notifier its next poll while the previous one still runs: an
    order in both waits for the earlier run, and an event in both is found in what it did."""
    ports = Ports()
    slow = ports.upstream.held["slow@example.org"] = asyncio.Event()
    handler = notifier(ports)
    paid = order_event("o-slow", OrderStatus.PAYMENT_APPROVED, customer_email="slow@example.org")
    handling = order_event("o-slow", OrderStatus.HANDLING, customer_email="slow@example.org")
    other = order_event("o-other", customer_email="other@example.org")
    earlier = asyncio.create_task(handler.handle([record(paid)]))
    await _settled()
    # The same event again (a producer retry), the order's next one, and another order's.
    later = asyncio.create_task(
        handler.handle(
            [record(paid, offset=1), record(handling, offset=2), record(other, offset=3)]
        )
    )
    await _settled()
    assert [d.recipients for d in ports.upstream.delivered] == [["other@example.org"]]
    assert not later.done()  # its o-slow events wait for the earlier poll's
    slow.set()
    await asyncio.gather(earlier, later)
    sent = {ports.messages.kept[notification_event_id(e.event_id)].raw: e.status
            for e in (paid, handling)}  # fmt: skip
    slow_mail = [sent[d.raw] for d in ports.upstream.delivered if d.raw in sent]
    assert slow_mail == [OrderStatus.PAYMENT_APPROVED, OrderStatus.HANDLING]
    assert ports.upstream.attempts == 3  # the redelivered event was not offered again
    kinds = [e.kind for e in ports.timeline() if e.order_id == "o-slow"]
    assert kinds.count(TimelineKind.NOTIFICATION_SENT) == 3  # republished for the duplicate


async def _settled() -> None:
    """Let every task run until all of them wait on something that has not happened."""
    for _ in range(50):
        await asyncio.sleep(0)


async def test_a_poll_reads_the_ledger_the_suppressions_and_the_aliases_once_for_all_its_orders(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ports = Ports()
    calls: Counter[str] = Counter()

    def counted(owner: object, name: str) -> None:
        original = getattr(owner, name)

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return await original(*args, **kwargs)

        monkeypatch.setattr(owner, name, wrapper)

    for owner, name in (
        (ports.ledger, "find_many"),
        (ports.records, "active_many"),
        (ports.aliases, "prepare_orders"),
    ):
        counted(owner, name)
    statuses = (OrderStatus.PAYMENT_APPROVED, OrderStatus.HANDLING, OrderStatus.SHIPPED)
    events = [order_event(f"o-poll-{k}", status) for k in range(20) for status in statuses]
    await notifier(ports).handle([record(e, offset=i) for i, e in enumerate(events)])
    assert len(ports.upstream.delivered) == 60  # every order's events, each sent
    assert calls == {"find_many": 1, "active_many": 1, "prepare_orders": 1}  # not one per order
    assert ports.ledger.writes == 60  # one per email: the message kept with its outcome


async def test_a_poll_whose_batch_of_new_orders_fails_still_emails_each_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ports = Ports()

    async def broken(orders: Any) -> None:
        raise RuntimeError("the batch insert failed")

    monkeypatch.setattr(ports.aliases, "prepare_orders", broken)
    events = [order_event(f"o-batch-{k}") for k in range(3)]
    await notifier(ports).handle([record(e, offset=i) for i, e in enumerate(events)])
    assert len(ports.upstream.delivered) == 3  # each order made its aliases on its own
    assert ports.dead_letters.published == []
