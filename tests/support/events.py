"""Order-status and timeline events made to measure, for the tests and the benchmarks."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from worker.contracts.events import (
    ConversationMessage,
    Customer,
    Direction,
    Item,
    OrderStatus,
    OrderStatusChanged,
    Participant,
    ParticipantRole,
    Store,
    TimelineEvent,
    TimelineKind,
)

T0 = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)


def order_event(
    order_id: str,
    status: OrderStatus = OrderStatus.PAYMENT_APPROVED,
    *,
    store_id: str = "store-1",
    event_id: str | None = None,
    at: datetime | None = None,
    customer_email: str = "jane.roe@example.org",
    store_email: str = "orders@shop.example.com",
    locale: str | None = "en",
    first_name: str = "Jane",
    **extra: Any,
) -> OrderStatusChanged:
    defaults: dict[str, Any] = {
        "total_value": 123456,
        "currency": "USD" if locale != "pt-BR" else "BRL",
        "items": [Item(name="Blue mug", quantity=2)],
    }
    if status == OrderStatus.INVOICED:
        defaults |= {
            "invoice_number": "NF-000123",
            "invoice_url": "https://shop.example.com/inv/123",
        }
    if status == OrderStatus.SHIPPED:
        defaults |= {
            "tracking_carrier": "Correios",
            "tracking_code": "BR123456789XX",
            "tracking_url": "https://track.example.com/BR123456789XX",
        }
    return OrderStatusChanged(
        event_id=event_id or str(uuid.uuid4()),
        order_id=order_id,
        store_id=store_id,
        occurred_at=at or T0,
        status=status,
        customer=Customer(
            email=customer_email, first_name=first_name, last_name="Roe", locale=locale
        ),
        store=Store(name="Shop Example", email=store_email, locale=None),
        **(defaults | extra),
    )


def timeline_event(
    order_id: str,
    *,
    minutes: int = 0,
    kind: TimelineKind = TimelineKind.STATUS_CHANGED,
    status: OrderStatus | None = OrderStatus.HANDLING,
    event_id: str | None = None,
    store_id: str = "store-1",
) -> TimelineEvent:
    message = None
    if kind != TimelineKind.STATUS_CHANGED:
        message = ConversationMessage(
            message_id=f"<m-{uuid.uuid4().hex}@ct.example.com>",
            from_=Participant(
                alias="a" * 32 + "@ct.example.com", name="Shop", role=ParticipantRole.STORE
            ),
            to=Participant(
                alias="b" * 32 + "@ct.example.com", name="Jane Roe", role=ParticipantRole.CUSTOMER
            ),
            subject="Your order",
            first_words="Hello Jane",
            has_attachment=False,
            attachment_names=[],
            direction=Direction.TO_CUSTOMER,
            size_bytes=1234,
        )
    return TimelineEvent(
        event_id=event_id or str(uuid.uuid4()),
        order_id=order_id,
        store_id=store_id,
        occurred_at=T0 + timedelta(minutes=minutes),
        kind=kind,
        causation_id="cause-" + (event_id or "x"),
        status=status if kind == TimelineKind.STATUS_CHANGED else None,
        message=message,
    )
