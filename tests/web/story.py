"""The console tests' data, made by the real workers: the demo's two stores and their orders.

Order events go to Kafka and the notifier emails them through the test's own capture server; a
carrier writes to a customer's alias through the relay (a PDF attached), the customer answers, a
hostile sender tries script in every field, one email is refused upstream (550), and a
malformed event is dead-lettered. The projector writes every timeline into MongoDB.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid, parseaddr
from typing import Any

import aiosmtplib

from tests.conftest import Capture
from tests.helpers import CODEC, produce, running
from tests.support.dns import LoopbackDns
from tests.support.kafka import topic_size
from tests.support.senders import SenderDomain, publish_all
from worker.adapters import mongo
from worker.adapters.dialect import detect_dialect
from worker.adapters.messages import MessageStore
from worker.adapters.stores import StoreSettings
from worker.apps.notifier import NotifierService
from worker.apps.projector import ProjectorService
from worker.apps.relay import RelayService
from worker.contracts.events import OrderStatus, OrderStatusChanged
from worker.core.config import Settings
from worker.core.crypto import AddressCipher
from worker.devtools.demo_setup import CARRIER, STORES, order_event
from worker.domain.aliases import SystemClock
from worker.services.timeline import get_timeline

RUN = "web"
# The story's customers write from a domain of its own whose SPF authorises 127.0.0.1, the
# address the test's SMTP client sends from, so the relay verifies them as the order's customer.
CUSTOMER_DOMAIN = SenderDomain("customers.web-story.example", "127.0.0.1")
HOSTILE = "<script>alert('xss')</script>"
HOSTILE_NAME = "<img src=x onerror=alert(1)>"
HOSTILE_FILE = "<script>alert(1)</script>.html"
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


@dataclass
class Story:
    hard_order: str
    soft_order: str
    customer_emails: dict[str, str]
    store_emails: dict[str, str]
    customer_alias: str
    kept: int = 0
    dead_letter_reason: str = ""
    aliases: dict[str, list[str]] = field(default_factory=dict)

    @property
    def real_addresses(self) -> list[str]:
        return [*self.customer_emails.values(), *self.store_emails.values(), CARRIER[1]]


def _order_event(store_index: int, n: int, status: OrderStatus) -> OrderStatusChanged:
    """The demo's event, from a customer of the story's own mail domain."""
    event = order_event(RUN, STORES[store_index], n, status, _now())
    local = event.customer.email.split("@")[0]
    customer = event.customer.model_copy(update={"email": f"{local}@{CUSTOMER_DOMAIN.name}"})
    return event.model_copy(update={"customer": customer})


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


async def _wait(check: Any, what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def _relay(port: int, message: EmailMessage, sender: str, to: str) -> None:
    await aiosmtplib.send(
        message, hostname="127.0.0.1", port=port, sender=sender, recipients=[to], start_tls=False
    )


def _carrier_notice(customer_alias: str) -> EmailMessage:
    notice = EmailMessage()
    notice["From"] = f"{CARRIER[0]} <{CARRIER[1]}>"
    notice["To"] = customer_alias
    notice["Subject"] = "Delivery window for your parcel"
    notice["Message-ID"] = make_msgid(domain="speedy-carrier.example")
    notice.set_content("Your parcel arrives tomorrow between 9:00 and 12:00. The slip is attached.")
    notice.add_attachment(PDF, maintype="application", subtype="pdf", filename="delivery-slip.pdf")
    return notice


def _hostile(customer_alias: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = f'"{HOSTILE_NAME}" <mallory@hostile.example>'
    message["To"] = customer_alias
    message["Subject"] = f"Urgent {HOSTILE}"
    message["Message-ID"] = make_msgid(domain="hostile.example")
    message.set_content(f"Click here {HOSTILE} javascript:alert(1)")
    message.add_alternative(
        f"<p>Hello {HOSTILE}<img src='https://tracker.hostile.example/p.gif'>"
        "<img src=x onerror=\"alert('img')\"> <a href=\"javascript:alert('link')\">track</a>"
        '<a href="https://hostile.example/ok" onclick="alert(\'click\')">ok</a></p>',
        subtype="html",
    )
    message.add_attachment(b"<script>alert(1)</script>", maintype="text", subtype="html",
                           filename=HOSTILE_FILE)  # fmt: skip
    return message


async def tell(settings: Settings, capture: Capture, db: mongo.Database, dns: LoopbackDns) -> Story:
    publish_all(dns, CUSTOMER_DOMAIN)
    stores = StoreSettings(db)
    for store_id, _, _, mask, _, _ in STORES:
        await stores.set_mask(store_id, mask)
    cipher = AddressCipher(settings.data_keys())
    relay = RelayService(settings, CODEC, cipher)
    services = (
        NotifierService(settings, CODEC, cipher),
        relay,
        ProjectorService(settings, CODEC),
    )
    hard = _order_event(0, 0, OrderStatus.PAYMENT_APPROVED)
    soft = _order_event(1, 1, OrderStatus.PAYMENT_APPROVED)
    async with running(*services):
        for status in (OrderStatus.PAYMENT_APPROVED, OrderStatus.HANDLING, OrderStatus.SHIPPED):
            await _emit(settings, _order_event(0, 0, status), _order_event(1, 1, status))
        hard_mail = await _wait(
            lambda: _mail_to(capture, hard.customer.email, 3), "the hard order's emails"
        )
        await _wait(lambda: _mail_to(capture, soft.customer.email, 3), "the soft order's emails")
        first = hard_mail[0]
        customer_alias = parseaddr(first["headers"]["To"])[1]
        assert relay.port is not None
        await _relay(relay.port, _carrier_notice(customer_alias), CARRIER[1], customer_alias)
        forwarded = await _wait(
            lambda: _mail_with(capture, "Delivery window"), "the carrier's forwarded notice"
        )
        reverse = parseaddr(forwarded["headers"]["From"])[1]
        reply = EmailMessage()
        reply["From"] = hard.customer.email
        reply["To"] = reverse
        reply["Subject"] = "Re: Delivery window for your parcel"
        reply.set_content("Afternoon works better for me, could you come after 14:00? Thanks!")
        await _relay(relay.port, reply, hard.customer.email, reverse)
        await _relay(
            relay.port, _hostile(customer_alias), "mallory@hostile.example", customer_alias
        )
        capture.refuse("550 5.1.1 Mailbox unavailable")
        await _emit(settings, _order_event(1, 1, OrderStatus.DELIVERED))
        await _wait(lambda: _entries(db, soft.order_id, 8), "the soft order's refused email")
        capture.accept()
        await produce(settings, settings.topic_order_status, [(hard.order_id, b"not avro")])
        await _wait(lambda: _entries(db, hard.order_id, 9), "the hard order's timeline")
        await _wait(lambda: _dead_letters(settings), "the malformed event's dead letter")
    story = Story(
        hard_order=hard.order_id,
        soft_order=soft.order_id,
        customer_emails={hard.order_id: hard.customer.email, soft.order_id: soft.customer.email},
        store_emails={hard.order_id: hard.store.email, soft.order_id: soft.store.email},
        customer_alias=customer_alias,
    )
    story.kept = await kept_messages(settings, db, [hard.order_id, soft.order_id])
    return story


async def kept_messages(settings: Settings, db: mongo.Database, order_ids: list[str]) -> int:
    """How many of the orders' timeline messages the workers kept whole."""
    store = MessageStore(
        db,
        AddressCipher(settings.data_keys()),
        retention_days=settings.message_retention_days,
        clock=SystemClock(),
        dialect=await detect_dialect(db),
    )
    kept = 0
    for order_id in order_ids:
        entries = await get_timeline(db, order_id) or []
        kept += len(await store.describe(e.event_id for e in entries if e.message is not None))
    return kept


async def _emit(settings: Settings, *events: OrderStatusChanged) -> None:
    await produce(
        settings, settings.topic_order_status, [(e.order_id, CODEC.encode(e)) for e in events]
    )


async def _mail_to(capture: Capture, rcpt: str, want: int) -> list[dict[str, Any]] | None:
    mail = [m for m in capture.messages() if m["rcptTos"] == [rcpt]]
    return mail if len(mail) >= want else None


async def _mail_with(capture: Capture, subject: str) -> dict[str, Any] | None:
    return next((m for m in capture.messages() if subject in m["headers"].get("Subject", "")), None)


async def _entries(db: mongo.Database, order_id: str, want: int) -> bool:
    doc = await db["orders"].find_one({"_id": order_id}, {"entryCount": 1})
    return doc is not None and int(doc.get("entryCount", 0)) >= want


async def _dead_letters(settings: Settings) -> bool:
    return (
        await topic_size(settings.model_copy(update={"topic_partitions": 1}), settings.topic_dlq)
        >= 1
    )
