"""One event's notification, prepared without I/O: the bytes, the parties and the outcome."""

from __future__ import annotations

import pytest

from tests.support.events import order_event
from worker.contracts.events import OrderStatus, TimelineKind
from worker.domain.aliases import InvalidAddress
from worker.domain.compose import UnsafeHeader, message_id_for
from worker.domain.errors import Unprocessable
from worker.domain.notifications import (
    derived_event_id,
    notification_parties,
    prepare,
)
from worker.domain.templates import TemplateRenderer, UnsupportedStatus

DOMAIN = "ct.example.com"
STORE_ALIAS = "a" * 32 + "@ct.example.com"
CUSTOMER_ALIAS = "b" * 32 + "@ct.example.com"


def test_prepare_composes_from_the_store_alias_to_the_customer_alias() -> None:
    event = order_event("ORD-7", OrderStatus.SHIPPED)
    rendered = TemplateRenderer(None).render(event)
    prepared = prepare(
        event, rendered, store_alias=STORE_ALIAS, customer_alias=CUSTOMER_ALIAS, domain=DOMAIN
    )
    assert prepared.message_id == message_id_for(event.event_id, DOMAIN)
    assert prepared.subject == rendered.subject
    assert prepared.first_words and len(prepared.first_words) <= 150
    head = prepared.raw.split(b"\r\n\r\n", 1)[0]
    assert STORE_ALIAS.encode() in head and CUSTOMER_ALIAS.encode() in head
    assert event.customer.email.encode() not in prepared.raw


def test_the_outcome_is_a_status_change_then_the_emails_fate_with_ids_from_the_event() -> None:
    event = order_event("ORD-7", OrderStatus.SHIPPED)
    rendered = TemplateRenderer(None).render(event)
    prepared = prepare(
        event, rendered, store_alias=STORE_ALIAS, customer_alias=CUSTOMER_ALIAS, domain=DOMAIN
    )
    sent_status, sent = prepared.timeline(at=event.occurred_at, failure=None)
    failed_status, failed = prepared.timeline(at=event.occurred_at, failure="550 5.1.1 No")
    assert sent_status == failed_status
    assert sent_status.kind is TimelineKind.STATUS_CHANGED
    assert sent_status.status is OrderStatus.SHIPPED
    assert sent_status.event_id == derived_event_id(event.event_id, "STATUS_CHANGED")
    assert (sent.kind, failed.kind) == (
        TimelineKind.NOTIFICATION_SENT,
        TimelineKind.DELIVERY_FAILED,
    )
    # Sent or failed, it is the one outcome of this event: the same id, so only one is kept.
    assert sent.event_id == failed.event_id == derived_event_id(event.event_id, "NOTIFICATION")
    assert failed.message is not None and failed.message.reason == "550 5.1.1 No"
    assert sent.message is not None and sent.message.reason is None
    assert sent.message.to.alias == CUSTOMER_ALIAS
    assert sent.message.from_.alias == STORE_ALIAS
    assert sent.message.size_bytes == len(prepared.raw)
    assert sent.causation_id == event.event_id


def test_parties_are_normalised_and_named() -> None:
    event = order_event("ORD-7", customer_email="  Jane.Roe@Example.ORG ", first_name="Jane")
    customer, store = notification_parties(event)
    assert customer.address == "jane.roe@example.org"
    assert customer.name == "Jane Roe"
    assert store.name == event.store.name


def test_every_refusal_on_the_way_is_unprocessable_with_a_reason() -> None:
    with pytest.raises(InvalidAddress, match="invalid address") as bad_address:
        notification_parties(order_event("ORD-7", customer_email="not-an-address"))
    with pytest.raises(UnsupportedStatus, match="UNKNOWN") as unknown:
        TemplateRenderer(None).render(order_event("ORD-7", OrderStatus.UNKNOWN))
    event = order_event("ORD-7")
    rendered = TemplateRenderer(None).render(event)
    with pytest.raises(UnsafeHeader, match="unsafe header") as unsafe:
        prepare(
            event,
            rendered,
            store_alias="x\r\nBcc: y@z",
            customer_alias=CUSTOMER_ALIAS,
            domain=DOMAIN,
        )
    for refusal in (bad_address.value, unknown.value, unsafe.value):
        assert isinstance(refusal, Unprocessable)
