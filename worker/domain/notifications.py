"""Which timeline events an order-status event and its email produce: values in, values out."""

from __future__ import annotations

import uuid
from datetime import datetime

from worker.events import (
    ConversationMessage,
    Direction,
    OrderStatusChanged,
    Participant,
    ParticipantRole,
    TimelineEvent,
    TimelineKind,
)

# Timeline event ids are derived from their cause, so the same cause always yields the same id
# and the projector's duplicate check absorbs every retry.
_NAMESPACE = uuid.UUID("6f1c1e2a-8a0b-4d55-9d8e-6a1b9a7c2f10")


def derived_event_id(cause_id: str, what: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{cause_id}/{what}"))


def status_changed(event: OrderStatusChanged) -> TimelineEvent:
    return TimelineEvent(
        event_id=derived_event_id(event.event_id, TimelineKind.STATUS_CHANGED),
        order_id=event.order_id,
        store_id=event.store_id,
        occurred_at=event.occurred_at,
        kind=TimelineKind.STATUS_CHANGED,
        causation_id=event.event_id,
        status=event.status,
    )


def notification_outcome(
    event: OrderStatusChanged,
    *,
    message_id: str,
    store_alias: str,
    customer_alias: str,
    subject: str,
    first_words: str,
    size_bytes: int,
    at: datetime,
    failure: str | None,
) -> TimelineEvent:
    """NOTIFICATION_SENT, or DELIVERY_FAILED with the reason when the upstream refused for good."""
    kind = TimelineKind.DELIVERY_FAILED if failure else TimelineKind.NOTIFICATION_SENT
    customer_name = f"{event.customer.first_name} {event.customer.last_name}".strip()
    return TimelineEvent(
        event_id=derived_event_id(event.event_id, "NOTIFICATION"),
        order_id=event.order_id,
        store_id=event.store_id,
        occurred_at=at,
        kind=kind,
        causation_id=event.event_id,
        status=None,
        message=ConversationMessage(
            message_id=message_id,
            from_=Participant(alias=store_alias, name=event.store.name, role=ParticipantRole.STORE),
            to=Participant(alias=customer_alias, name=customer_name, role=ParticipantRole.CUSTOMER),
            subject=subject,
            first_words=first_words,
            has_attachment=False,
            attachment_names=[],
            direction=Direction.TO_CUSTOMER,
            size_bytes=size_bytes,
            reason=failure,
        ),
    )
