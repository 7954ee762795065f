"""`ct demo`: the scripted story on the local stack, shown as a person would want to see it.

Two stores (one hard-masked, one soft), a few orders walking PAYMENT_APPROVED → DELIVERED, a
carrier writing to a customer's alias and the customer answering through the relay, and a
customer whose mailbox does not exist (their provider's bounce lands on the order's timeline
and the next email is suppressed); then the captured emails and each order's conversation.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import parseaddr
from pathlib import Path
from typing import Any

import aiosmtplib

from worker.adapters import mongo
from worker.adapters.dkim_keys import generate_key as generate_dkim_key
from worker.adapters.dkim_keys import write_key
from worker.adapters.kafka import ensure_topics, make_producer
from worker.adapters.stores import StoreSettings
from worker.contracts.codec import SingleObjectCodec
from worker.contracts.events import Customer, Item, OrderStatus, OrderStatusChanged, Store
from worker.core.config import Settings
from worker.core.crypto import generate_key
from worker.devtools.demo_bounce import BOUNCED_CUSTOMER, PROVIDER, delivery_status_notification
from worker.devtools.sink import read_index
from worker.domain.aliases import MaskType
from worker.services.timeline import format_table, get_timeline

JOURNEY = [
    OrderStatus.PAYMENT_APPROVED,
    OrderStatus.HANDLING,
    OrderStatus.INVOICED,
    OrderStatus.SHIPPED,
    OrderStatus.DELIVERED,
]
STORES = [
    ("aurora", "Aurora Coffee Co.", "orders@aurora-coffee.example", MaskType.HARD, "en", "USD"),
    ("bazar", "Bazar da Vila", "vendas@bazardavila.example", MaskType.SOFT, "pt-BR", "BRL"),
]
CUSTOMERS = [
    ("Jane", "Doe", "jane.doe@example.org"),
    ("Rafael", "Souza", "rafael.souza@example.net"),
]
CARRIER = ("Speedy Carrier", "tracking@speedy-carrier.example")
STEP_TIMEOUT_S = 60.0


def say(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def state_dir() -> Path:
    default = Path.home() / ".local" / "state" / "conversation-tracker"
    return Path(os.environ.get("CT_STATE_DIR", str(default)))


def demo_key(settings: Settings) -> str:
    """The settings' key, else one kept beside the stack's data so re-runs can read old aliases."""
    if settings.encryption_key is not None:
        return settings.encryption_key.get_secret_value()
    path = state_dir() / "demo-encryption.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(generate_key() + "\n", encoding="utf-8")
        path.chmod(0o600)
    return path.read_text(encoding="utf-8").strip()


def demo_dkim(settings: Settings) -> dict[str, str]:
    """The settings' DKIM key, else one kept beside the stack's data: the workers sign with it."""
    if settings.dkim_selector and settings.dkim_private_key_file:
        return {}  # the workers read CT_DKIM_* from the environment as they are
    path = state_dir() / "demo-dkim.pem"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_key(generate_dkim_key("rsa"), path, overwrite=False)
    return {"CT_DKIM_SELECTOR": "demo", "CT_DKIM_PRIVATE_KEY_FILE": str(path)}


async def wait_for(
    check: Callable[[], Awaitable[Any]], what: str, within: float = STEP_TIMEOUT_S
) -> Any:
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within:.0f}s waiting for {what}")
        await asyncio.sleep(0.25)


def _event(
    run: str, store: tuple[Any, ...], n: int, status: OrderStatus, at: datetime
) -> OrderStatusChanged:
    store_id, name, email, _, locale, currency = store
    first, last, customer_email = CUSTOMERS[n % len(CUSTOMERS)]
    local, domain = customer_email.split("@")
    order_id = f"{store_id.upper()}-{run}-{n + 1}"
    extras: dict[str, Any] = {}
    if status in (OrderStatus.INVOICED, OrderStatus.SHIPPED, OrderStatus.DELIVERED):
        extras |= {
            "invoice_number": f"NF-{run}-{n + 1}",
            "invoice_url": f"https://{email.split('@')[1]}/nf/{order_id}",
        }
    if status in (OrderStatus.SHIPPED, OrderStatus.DELIVERED):
        code = f"SC{run.upper()}{n + 1}BR"
        extras |= {
            "tracking_carrier": CARRIER[0],
            "tracking_code": code,
            "tracking_url": f"https://track.speedy-carrier.example/{code}",
        }
    return OrderStatusChanged(
        event_id=f"{order_id}-{status.value}",
        order_id=order_id,
        store_id=store_id,
        occurred_at=at,
        status=status,
        customer=Customer(
            email=f"{local}+{run}-{n + 1}@{domain}", first_name=first, last_name=last, locale=locale
        ),
        store=Store(name=name, email=email, locale=locale),
        total_value=4990 + 1500 * n,
        currency=currency,
        items=[
            Item(name="Single-origin beans 250 g", quantity=2),
            Item(name="Ceramic mug", quantity=1),
        ],
        **extras,
    )


class Demo:
    def __init__(self, settings: Settings, orders_per_store: int) -> None:
        self.settings = settings
        self.orders_per_store = orders_per_store
        self.run = secrets.token_hex(3)
        self.sink = state_dir() / "sink"
        self.codec = SingleObjectCodec()
        self.order_ids: list[str] = []
        self.customers: dict[str, str] = {}
        self.bounced_order: str | None = None
        self.started = time.monotonic()

    def step(self, text: str) -> None:
        say(f"[{time.monotonic() - self.started:5.1f}s] {text}")

    def my_mail(self) -> list[dict[str, Any]]:
        return [
            m
            for m in read_index(self.sink)
            if self.run in m["headers"].get("Subject", "") + " ".join(m["rcptTos"])
        ]

    def plan_orders(self) -> None:
        n = 0
        for store in STORES:
            for _ in range(self.orders_per_store):
                event = _event(self.run, store, n, JOURNEY[0], datetime.now(UTC))
                self.order_ids.append(event.order_id)
                self.customers[event.order_id] = event.customer.email
                self.step(f"  order {event.order_id}: {store[1]} ({store[3].value} aliases)")
                n += 1

    async def emit_step(self, step: int) -> None:
        """Every order moves to JOURNEY[step]; returns once each order's email was captured."""
        status = JOURNEY[step]
        producer = make_producer(self.settings, "ct-demo")
        await producer.start()
        try:
            n = 0
            for store in STORES:
                for _ in range(self.orders_per_store):
                    event = _event(self.run, store, n, status, datetime.now(UTC))
                    await producer.send_and_wait(
                        self.settings.topic_order_status,
                        key=event.order_id.encode(),
                        value=self.codec.encode(event),
                    )
                    n += 1
        finally:
            await producer.stop()
        await wait_for(
            lambda: asyncio.to_thread(self._all_notified, step + 1), f"the {status.value} emails"
        )
        self.step(f"  {status.value:<16} emitted for {n} orders: {n} emails captured")

    def _all_notified(self, count: int) -> bool:
        index = read_index(self.sink)
        return all(
            sum(
                m["rcptTos"] == [c] and "Delivery window" not in m["headers"].get("Subject", "")
                for m in index
            )
            >= count
            for c in self.customers.values()
        )

    async def relay(self, message: EmailMessage, sender: str, to: str) -> None:
        await aiosmtplib.send(
            message,
            hostname="127.0.0.1",
            port=self.settings.relay_port,
            sender=sender,
            recipients=[to],
            start_tls=False,
        )

    async def carrier_and_reply(self, order_id: str) -> None:
        customer = self.customers[order_id]
        notification = await wait_for(
            lambda: asyncio.to_thread(self._notification_to, customer), f"the emails of {order_id}"
        )
        customer_alias = parseaddr(notification["headers"]["To"])[1]
        notice = EmailMessage()
        notice["From"] = f"{CARRIER[0]} <{CARRIER[1]}>"
        notice["To"] = customer_alias
        notice["Subject"] = f"Delivery window for your parcel ({self.run})"
        notice.set_content(
            "Your parcel arrives tomorrow between 9:00 and 12:00. Reply to change the slot."
        )
        await self.relay(notice, CARRIER[1], customer_alias)
        self.step(f"  carrier → {customer_alias} (customer alias of {order_id}): 250 forwarded")
        forwarded = await wait_for(
            lambda: asyncio.to_thread(self._last_to, customer, "Delivery window"),
            "the carrier's message",
        )
        reverse_alias = parseaddr(forwarded["headers"]["From"])[1]
        reply = EmailMessage()
        reply["From"] = customer
        reply["To"] = reverse_alias
        reply["Subject"] = f"Re: Delivery window for your parcel ({self.run})"
        reply["In-Reply-To"] = forwarded["headers"].get("Message-ID", "")
        reply.set_content("Afternoon works better for me, could you come after 14:00? Thanks!")
        await self.relay(reply, customer, reverse_alias)
        self.step(f"  customer → {reverse_alias} (the carrier's reverse alias): 250 forwarded")

    async def bounce_story(self, db: mongo.Database) -> None:
        """An order of the first store whose customer's mailbox does not exist."""
        first, last, address = BOUNCED_CUSTOMER
        n = len(STORES) * self.orders_per_store

        def event(status: OrderStatus) -> OrderStatusChanged:
            base = _event(self.run, STORES[0], n, status, datetime.now(UTC))
            customer = Customer(email=address, first_name=first, last_name=last, locale="en")
            return base.model_copy(update={"customer": customer})

        self.bounced_order = order_id = event(JOURNEY[0]).order_id
        await self._emit(event(JOURNEY[0]))
        notification = await wait_for(
            lambda: asyncio.to_thread(self._last_to, address, order_id), f"the email of {order_id}"
        )
        raw = (self.sink / str(notification["file"])).read_bytes()
        return_path = notification["mailFrom"]
        report = delivery_status_notification(raw, address, return_path)
        # A bounce comes from the null reverse path (RFC 5321 4.5.5).
        relay = aiosmtplib.SMTP(
            hostname="127.0.0.1", port=self.settings.relay_port, start_tls=False
        )
        async with relay:
            await relay.sendmail("", [return_path], report)
        self.step(f"  {PROVIDER} → {return_path[:30]}… (the email's VERP return path): DSN 5.1.1")
        await wait_for(lambda: _has(db, order_id, "DELIVERY_FAILED", 1), "the bounce's entry")
        self.step(f"  order {order_id}: DELIVERY_FAILED 5.1.1 on its timeline; address suppressed")
        await self._emit(event(JOURNEY[1]))
        await wait_for(lambda: _has(db, order_id, "DELIVERY_FAILED", 2), "the suppressed email")
        self.step(f"  {JOURNEY[1].value}: not sent, DELIVERY_FAILED `suppressed` instead")

    async def _emit(self, event: OrderStatusChanged) -> None:
        producer = make_producer(self.settings, "ct-demo")
        await producer.start()
        try:
            await producer.send_and_wait(
                self.settings.topic_order_status,
                key=event.order_id.encode(),
                value=self.codec.encode(event),
            )
        finally:
            await producer.stop()

    def _notification_to(self, customer: str) -> dict[str, Any] | None:
        mail = [m for m in read_index(self.sink) if m["rcptTos"] == [customer]]
        return mail[0] if mail else None

    def _last_to(self, rcpt: str, subject: str) -> dict[str, Any] | None:
        mail = [
            m
            for m in read_index(self.sink)
            if m["rcptTos"] == [rcpt] and subject in m["headers"].get("Subject", "")
        ]
        return mail[-1] if mail else None


async def run_demo(settings: Settings, orders_per_store: int) -> int:
    key = demo_key(settings)
    settings = settings.model_copy(update={"encryption_key": None})
    demo = Demo(settings, orders_per_store)
    say(f"Conversation Tracker demo (run {demo.run}) on the local stack")
    created = await ensure_topics(settings, settings.topic_partitions, 1)
    demo.step(f"topics: {', '.join(created) or 'already there'}")
    client = mongo.connect(settings, app_name="ct-demo")
    db = client[settings.mongo_db]
    for store_id, name, _, mask, _, _ in STORES:
        await StoreSettings(db).set_mask(store_id, mask)
        demo.step(f"store {store_id} ({name}): {mask.value} aliases")
    http_port = 9464
    log_path = state_dir() / "run" / "demo-workers.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {
        # The demo's carrier and customers write from loopback for example domains that no DNS
        # serves: sender authentication would refuse them (451 4.4.3). A real relay enforces it.
        "CT_RELAY_SENDER_AUTH": "off",
        **os.environ,
        "CT_ENCRYPTION_KEY": key,
        **demo_dkim(settings),
        "CT_HTTP_PORT": str(http_port),
        "CT_LOG_FORMAT": "json",
    }
    with log_path.open("ab") as log_file:
        worker = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "worker.cli",
            "run",
            # The workers alone: the console is `make console`, on a port of its own choosing.
            "notifier",
            "relay",
            "projector",
            env=env,
            stdout=log_file,
            stderr=log_file,
        )
    try:
        await wait_for(
            lambda: _ready(http_port), "the workers to be ready (see " + str(log_path) + ")"
        )
        demo.step(
            f"workers up in one process (pid {worker.pid}): notifier, projector, "
            f"relay on :{settings.relay_port} (sender authentication "
            f"{env['CT_RELAY_SENDER_AUTH']}: no DNS serves the demo's senders)"
        )
        demo.step("orders of two stores, one hard-masked and one soft:")
        demo.plan_orders()
        demo.step("order-status events to Kafka, step by step; the notifier emails each one:")
        for step in range(len(JOURNEY) - 1):
            await demo.emit_step(step)
        demo.step("a carrier writes to a customer's alias; the customer answers through the relay:")
        await demo.carrier_and_reply(demo.order_ids[0])
        await demo.carrier_and_reply(demo.order_ids[-1])
        await demo.emit_step(len(JOURNEY) - 1)
        demo.step("a customer's mailbox does not exist; their provider bounces the email:")
        await demo.bounce_story(db)
        expected = len(demo.order_ids) * 2 * len(JOURNEY) + 4
        await wait_for(lambda: _entries(db, demo.order_ids, expected), "the timelines in MongoDB")
        demo.step("all timelines written to MongoDB")
    finally:
        worker.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(worker.wait(), settings.shutdown_grace_s + 15)
        demo.step(f"workers stopped on SIGTERM (exit {code})")
    await show(demo, db)
    await client.close()
    say("\nWhere to look next:")
    say(f"  ct timeline {demo.order_ids[0]}        (add --json for the raw entries)")
    say(f"  ct timeline {demo.bounced_order}  (the bounced customer's order)")
    say(f"  captured mail: {demo.sink}/*.eml and index.jsonl")
    say(f"  worker logs:   {log_path}")
    say(f"  MongoDB:       {settings.mongo_uri_shown} db {settings.mongo_db}")
    say("                 collections orders, aliases, audit")
    say("  ct alias resolve ALIAS --reason '...'  ·  ct dlq list  ·  deploy/local/stack down")
    say("\nOpen the console on this data, in a browser, with one command:")
    say(
        f"  make console      (then http://{settings.web_host}:{settings.web_port}/ , the order"
        f" {demo.order_ids[0]}; it prints a one-time admin password)"
    )
    return 0


async def _ready(port: int) -> bool:
    with contextlib.suppress(OSError):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /readyz HTTP/1.0\r\n\r\n")
        status = await reader.readline()
        writer.close()
        return b" 200 " in status
    return False


async def _has(db: mongo.Database, order_id: str, kind: str, count: int) -> bool:
    entries = await get_timeline(db, order_id) or []
    return sum(e.kind.value == kind for e in entries) >= count


async def _entries(db: mongo.Database, order_ids: list[str], want: int) -> bool:
    timelines = await asyncio.gather(*(get_timeline(db, order_id) for order_id in order_ids))
    return sum(len(entries or []) for entries in timelines) >= want


async def show(demo: Demo, db: mongo.Database) -> None:
    mail = demo.my_mail()
    say(f"\nEmails captured by the SMTP sink ({len(mail)}): the real address only in the envelope")
    say(f"  {'envelope to (real)':<36} {'From (masked)':<72} Subject")
    for m in mail:
        sender = m["headers"].get("From", "")[:72]
        say(f"  {m['rcptTos'][0]:<36} {sender:<72} {m['headers'].get('Subject', '')[:70]}")
    for order_id in [*demo.order_ids, *([demo.bounced_order] if demo.bounced_order else [])]:
        entries = await get_timeline(db, order_id) or []
        say("\n" + format_table(order_id, entries))
