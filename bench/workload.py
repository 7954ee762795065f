"""What the bench sends: order lifecycles as OMS events, their timeline events, rendered mail.

An order goes through five statuses; the events are produced wave by wave (every order's
PAYMENT_APPROVED, then every order's HANDLING, ...), as a day of traffic interleaves orders,
so a worker meets both new orders (aliases created) and known ones (aliases found).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from tests.support.events import order_event, timeline_event
from worker.contracts.codec import SingleObjectCodec
from worker.contracts.events import OrderStatus, OrderStatusChanged, TimelineEvent, TimelineKind
from worker.domain.compose import compose_notification
from worker.domain.notifications import derived_event_id
from worker.domain.projection import merge
from worker.domain.templates import TemplateRenderer

CODEC = SingleObjectCodec()
LIFECYCLE = (
    OrderStatus.PAYMENT_APPROVED,
    OrderStatus.HANDLING,
    OrderStatus.INVOICED,
    OrderStatus.SHIPPED,
    OrderStatus.DELIVERED,
)
STORES = 20
Item = tuple[bytes, bytes]


def _order_id(tag: str, index: int) -> str:
    return f"{tag}-o{index:07d}"


def status_event(
    tag: str, index: int, status: OrderStatus, at: datetime | None = None
) -> OrderStatusChanged:
    return order_event(
        _order_id(tag, index),
        status,
        store_id=f"store-{index % STORES}",
        at=at,
        customer_email=f"customer{index}@example.org",
        store_email=f"orders@shop{index % STORES}.example.com",
        first_name=f"Jane{index}",
    )


def lifecycle_events(n: int, tag: str) -> list[OrderStatusChanged]:
    """`n` OMS events over ceil(n / 5) orders, produced wave by wave."""
    orders = -(-n // len(LIFECYCLE))
    events = [status_event(tag, i, s) for s in LIFECYCLE for i in range(orders)]
    return events[:n]


def encoded(events: list[OrderStatusChanged]) -> list[Item]:
    return [(e.order_id.encode(), CODEC.encode(e)) for e in events]


def timeline_lifecycle(n: int, tag: str) -> list[TimelineEvent]:
    """`n` timeline events as the notifier writes them: a STATUS_CHANGED and a NOTIFICATION_SENT
    per status, over ceil(n / 10) orders, wave by wave."""
    per_order = 2 * len(LIFECYCLE)
    orders = -(-n // per_order)
    events = [
        timeline_event(
            _order_id(tag, i),
            minutes=minute * 10 + (kind == TimelineKind.NOTIFICATION_SENT),
            kind=kind,
            status=status,
            event_id=derived_event_id(f"{tag}-{i}-{status.value}", kind.value),
            store_id=f"store-{i % STORES}",
        )
        for minute, status in enumerate(LIFECYCLE)
        for i in range(orders)
        for kind in (TimelineKind.STATUS_CHANGED, TimelineKind.NOTIFICATION_SENT)
    ]
    return events[:n]


def encoded_timeline(events: list[TimelineEvent]) -> list[Item]:
    return [(e.order_id.encode(), CODEC.encode(e)) for e in events]


def render_mail(
    renderer: TemplateRenderer, event: OrderStatusChanged, domain: str, n: int = 0
) -> tuple[str, str, bytes]:
    """(sender, recipient, bytes) of the notification for `event`, as the notifier sends it."""
    store_alias, customer_alias = f"{n:032d}@{domain}", f"{n + 1:032d}@{domain}"
    composed = compose_notification(
        renderer.render(event),
        event=event,
        store_alias=store_alias,
        customer_alias=customer_alias,
        domain=domain,
    )
    return store_alias, event.customer.email, composed.raw


def rendered_messages(domain: str) -> list[tuple[str, str, bytes]]:
    """One real notification per lifecycle status, rendered once: the SMTP ceiling's payload."""
    renderer = TemplateRenderer(None)
    return [
        render_mail(renderer, status_event("render", i, s), domain, 2 * i)
        for i, s in enumerate(LIFECYCLE)
    ]


def order_document(tag: str, index: int) -> dict[str, Any]:
    """An `orders` document as the projector writes it after an order's first status."""
    cause = f"{tag}-{index}"
    events = [
        timeline_event(
            _order_id(tag, index),
            minutes=minute,
            kind=kind,
            event_id=derived_event_id(cause, kind.value),
            store_id=f"store-{index % STORES}",
        )
        for minute, kind in enumerate((TimelineKind.STATUS_CHANGED, TimelineKind.NOTIFICATION_SENT))
    ]
    projection = merge([], events)
    fields = projection.fields() if projection else {}
    return {"_id": _order_id(tag, index), **fields}


def now_utc() -> datetime:
    return datetime.fromtimestamp(time.time(), UTC)
