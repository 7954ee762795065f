"""One event's notification, from its aliases to the timeline events it produces: values only.

The notifier's I/O shell renders the event, gets the order's aliases, calls `prepare` and sends
what it returns; every refusal on the way is an `Unprocessable` (dead-lettered with its reason).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from worker.contracts.events import (
    ConversationMessage,
    DeliveryReport,
    Direction,
    OrderStatusChanged,
    Participant,
    ParticipantRole,
    TimelineEvent,
    TimelineKind,
)
from worker.domain.aliases import Party, normalize_address
from worker.domain.compose import compose_notification
from worker.domain.templates import RenderedEmail
from worker.domain.text import first_words

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


def notification_event_id(cause_id: str) -> str:
    """The id of an email's outcome event (sent or failed alike): the key its message is kept
    by, and what its VERP token names."""
    return derived_event_id(cause_id, "NOTIFICATION")


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
    delivery: DeliveryReport | None = None,
) -> TimelineEvent:
    """NOTIFICATION_SENT; or DELIVERY_FAILED with the reason (and the report, when there is one)
    when the upstream refused for good or the customer's address is suppressed."""
    kind = TimelineKind.DELIVERY_FAILED if failure else TimelineKind.NOTIFICATION_SENT
    return TimelineEvent(
        event_id=notification_event_id(event.event_id),
        order_id=event.order_id,
        store_id=event.store_id,
        occurred_at=at,
        kind=kind,
        causation_id=event.event_id,
        status=None,
        message=ConversationMessage(
            message_id=message_id,
            from_=Participant(alias=store_alias, name=event.store.name, role=ParticipantRole.STORE),
            to=Participant(
                alias=customer_alias, name=event.customer.full_name, role=ParticipantRole.CUSTOMER
            ),
            subject=subject,
            first_words=first_words,
            has_attachment=False,
            attachment_names=[],
            direction=Direction.TO_CUSTOMER,
            size_bytes=size_bytes,
            reason=failure,
        ),
        delivery=delivery,
    )


def notification_parties(event: OrderStatusChanged) -> tuple[Party, Party]:
    """The customer and the store as the alias store keys them; InvalidAddress when unusable."""
    return (
        Party(normalize_address(event.customer.email), event.customer.full_name),
        Party(normalize_address(event.store.email), event.store.name),
    )


@dataclass(frozen=True, slots=True)
class PreparedNotification:
    """An event's email, ready to send from the store alias, and how to record its outcome."""

    event: OrderStatusChanged
    raw: bytes
    message_id: str
    subject: str
    first_words: str
    store_alias: str
    customer_alias: str

    @property
    def outcome_event_id(self) -> str:
        return notification_event_id(self.event.event_id)

    def timeline(
        self, *, at: datetime, failure: str | None, delivery: DeliveryReport | None = None
    ) -> list[TimelineEvent]:
        """The timeline events of the outcome: the status change, then the email's fate."""
        return [status_changed(self.event), self.outcome(at=at, failure=failure, delivery=delivery)]

    def outcome(
        self, *, at: datetime, failure: str | None = None, delivery: DeliveryReport | None = None
    ) -> TimelineEvent:
        return notification_outcome(
            self.event,
            message_id=self.message_id,
            store_alias=self.store_alias,
            customer_alias=self.customer_alias,
            subject=self.subject,
            first_words=self.first_words,
            size_bytes=len(self.raw),
            at=at,
            failure=failure,
            delivery=delivery,
        )


def prepare(
    event: OrderStatusChanged,
    rendered: RenderedEmail,
    *,
    store_alias: str,
    customer_alias: str,
    domain: str,
) -> PreparedNotification:
    """The message the store alias sends the customer alias; UnsafeHeader when it cannot be."""
    composed = compose_notification(
        rendered,
        event=event,
        store_alias=store_alias,
        customer_alias=customer_alias,
        domain=domain,
    )
    return PreparedNotification(
        event=event,
        raw=composed.raw,
        message_id=composed.message_id,
        subject=rendered.subject,
        first_words=first_words(rendered.text),
        store_alias=store_alias,
        customer_alias=customer_alias,
    )
