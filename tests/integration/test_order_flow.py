"""The orderFlow alias expiry and the message store, through the real notifier and relay.

A store on orderFlow: its order's aliases stop working CT_ALIAS_GRACE_DAYS after DELIVERED
(the relay refuses and records it), and a later status event opens them again. Every email the
notifier sends and every message the relay forwards is kept whole, sealed, in the message store.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import parseaddr

import pytest

from tests.conftest import Capture
from tests.helpers import CODEC, produce, running
from tests.support.events import order_event
from tests.support.polling import eventually
from tests.support.relay_client import rcpt_code
from worker.adapters import mongo
from worker.adapters.dialect import Dialect
from worker.adapters.messages import MessageStore
from worker.adapters.stores import StoreSettings
from worker.adapters.subject_keys import SubjectKeys
from worker.apps.notifier import NotifierService
from worker.apps.projector import ProjectorService
from worker.apps.relay import RelayService
from worker.contracts.events import OrderStatus, OrderStatusChanged, TimelineEvent, TimelineKind
from worker.core.config import Settings
from worker.core.crypto import AddressCipher
from worker.domain.aliases import AliasExpiry, SystemClock
from worker.services.timeline import get_timeline

pytestmark = pytest.mark.stack
CARRIER = "tracking@carrier.example.net"
TRACKING = {
    "tracking_carrier": "Correios",
    "tracking_code": "BR1XX",
    "tracking_url": "https://track.example.com/BR1XX",
    "invoice_number": "NF-1",
    "invoice_url": "https://shop.example.com/inv/1",
}


async def _send(port: int, to: str, subject: str) -> int:
    message = EmailMessage()
    message["From"] = CARRIER
    message["To"] = to
    message["Subject"] = subject
    message.set_content("About your parcel.")
    return await rcpt_code(message, port, CARRIER, to)


async def _emit(settings: Settings, event: OrderStatusChanged) -> None:
    await produce(settings, settings.topic_order_status, [(event.order_id, CODEC.encode(event))])


async def test_order_flow_aliases_close_after_the_grace_period_and_reopen_on_a_later_status(
    topics: Settings, with_capture: Settings, capture: Capture, db: mongo.Database,
    dialect: Dialect,
) -> None:  # fmt: skip
    settings = with_capture.model_copy(
        update={"relay_port": 0, "alias_cache_size": 0, "alias_grace_days": 7}
    )
    store_id = f"flow-{uuid.uuid4().hex[:6]}"
    order_id = f"o-{store_id}"
    await StoreSettings(db).update(store_id, alias_expiry=AliasExpiry.ORDER_FLOW)
    cipher = AddressCipher(settings.data_keys())
    relay = RelayService(settings, CODEC, cipher)
    now = datetime.now(UTC)
    async with running(
        NotifierService(settings, CODEC, cipher), relay, ProjectorService(settings, CODEC)
    ):
        assert relay.port is not None
        delivered = order_event(
            order_id, OrderStatus.DELIVERED, store_id=store_id, at=now - timedelta(days=8),
            **TRACKING,
        )  # fmt: skip
        await _emit(settings, delivered)
        [email] = await eventually(lambda: capture.messages() or None, what="the DELIVERED email")
        customer_alias = parseaddr(email["headers"]["To"])[1]
        window = await eventually(
            lambda: db["alias_windows"].find_one({"_id": order_id}), what="the alias window"
        )
        assert window["closed"] is True
        assert abs(window["expiresAt"] - (delivered.occurred_at + timedelta(days=7))) < (
            timedelta(seconds=1)
        )

        assert await _send(relay.port, customer_alias, "Too late") == 550
        handling = order_event(order_id, OrderStatus.HANDLING, store_id=store_id, at=now)
        await _emit(settings, handling)  # a return: the conversation opens again
        await eventually(
            lambda: _window_at(db, order_id, handling.occurred_at), what="the reopened window"
        )
        assert await _send(relay.port, customer_alias, "Return label") == 250

        entries = await eventually(
            lambda: _timeline_with(db, order_id, TimelineKind.MESSAGE_FORWARDED),
            what="the forwarded message on the timeline",
        )
    kinds = [e.kind for e in entries]
    assert TimelineKind.MESSAGE_REJECTED in kinds  # the refusal was recorded, as always

    store = MessageStore(
        db, cipher, retention_days=60, clock=SystemClock(), dialect=dialect,
        subject_keys=SubjectKeys(db, cipher, clock=SystemClock()),
    )  # fmt: skip
    kept = await store.describe(e.event_id for e in entries if e.message is not None)
    sent = [e for e in entries if e.kind is TimelineKind.NOTIFICATION_SENT]
    forwarded = [e for e in entries if e.kind is TimelineKind.MESSAGE_FORWARDED]
    assert len(sent) == 2 and len(forwarded) == 1
    assert {e.event_id for e in sent + forwarded} <= set(kept)
    raw = await store.open(forwarded[0].event_id, order_id)
    assert raw is not None and b"Subject: Return label" in raw
    assert CARRIER.encode() not in raw.split(b"\r\n\r\n", 1)[0]  # the forwarded, masked bytes
    notification = await store.open(sent[0].event_id, order_id)
    assert notification == capture.raw(capture.messages()[0])


async def test_a_fixed_store_gets_no_window(
    topics: Settings, with_capture: Settings, capture: Capture, db: mongo.Database
) -> None:
    cipher = AddressCipher(with_capture.data_keys())
    order_id = f"o-fixed-{uuid.uuid4().hex[:6]}"
    async with running(NotifierService(with_capture, CODEC, cipher)):
        await _emit(with_capture, order_event(order_id, OrderStatus.PAYMENT_APPROVED))
        await eventually(lambda: capture.messages() or None, what="the email")
    assert await db["alias_windows"].find_one({"_id": order_id}) is None


async def _window_at(db: mongo.Database, order_id: str, at: datetime) -> bool:
    doc = await db["alias_windows"].find_one({"_id": order_id})
    return doc is not None and abs(doc["eventAt"] - at) < timedelta(seconds=1)


async def _timeline_with(
    db: mongo.Database, order_id: str, kind: TimelineKind
) -> list[TimelineEvent] | None:
    entries = await get_timeline(db, order_id) or []
    return entries if any(e.kind is kind for e in entries) else None
