"""`ct demo`: the scripted story on the local stack, shown as a person would want to see it.

Two stores (one hard-masked, one soft), a few orders walking PAYMENT_APPROVED → DELIVERED, a
carrier writing to a customer's alias and the customer answering through the relay, and a
customer whose mailbox does not exist (their provider's bounce lands on the order's timeline
and the next email is suppressed); then the captured emails and each order's conversation.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import sys
import time
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import parseaddr
from typing import Any

import aiosmtplib

from worker.adapters import mongo
from worker.adapters.alias_store import AliasStore
from worker.adapters.dialect import detect_dialect
from worker.adapters.kafka import ensure_topics, make_producer
from worker.adapters.stores import StoreSettings
from worker.adapters.subject_keys import SubjectKeys
from worker.contracts.codec import SingleObjectCodec
from worker.contracts.events import Customer, OrderStatus, OrderStatusChanged
from worker.core.config import Settings, decode_key
from worker.core.crypto import AddressCipher
from worker.devtools.demo_bounce import BOUNCED_CUSTOMER, PROVIDER, delivery_status_notification
from worker.devtools.demo_setup import (
    CARRIER,
    DEMO_DNS,
    DEMO_HTTP_PORT,
    JOURNEY,
    STORES,
    demo_key,
    dns_answers,
    order_event,
    say,
    state_dir,
    wait_for,
    worker_env,
    workers_ready,
)
from worker.devtools.sink import read_index
from worker.domain.aliases import SystemClock
from worker.services.subjects import Subjects
from worker.services.timeline import format_table, get_timeline

# The demo's senders write from 127.0.0.1, which their domains' SPF records authorise
# (deploy/local/demo-zone.conf, served by the stack's dnsmasq); the forger from 127.0.0.3.
GENUINE_SOURCE, FORGER_SOURCE = "127.0.0.1", "127.0.0.3"


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
                event = order_event(self.run, store, n, JOURNEY[0], datetime.now(UTC))
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
                    event = order_event(self.run, store, n, status, datetime.now(UTC))
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

    async def relay(
        self, message: EmailMessage, sender: str, to: str, source: str = GENUINE_SOURCE
    ) -> None:
        await aiosmtplib.send(
            message,
            hostname="127.0.0.1",
            port=self.settings.relay_port,
            sender=sender,
            recipients=[to],
            start_tls=False,
            source_address=(source, 0),
        )

    async def forged_carrier(self, order_id: str) -> None:
        """Someone not the carrier, writing as the carrier from another address: refused."""
        self.step("someone forges the carrier's address (its domain publishes DMARC p=reject):")
        notification = await wait_for(
            lambda: asyncio.to_thread(self._notification_to, self.customers[order_id]),
            f"the emails of {order_id}",
        )
        customer_alias = parseaddr(notification["headers"]["To"])[1]
        forged = EmailMessage()
        forged["From"] = f"{CARRIER[0]} <{CARRIER[1]}>"
        forged["To"] = customer_alias
        forged["Subject"] = f"Customs fee due for your parcel ({self.run})"
        forged.set_content("Pay the customs fee at https://pay.example/ within 24 hours.")
        try:
            await self.relay(forged, CARRIER[1], customer_alias, source=FORGER_SOURCE)
        except aiosmtplib.SMTPResponseException as exc:
            self.step(f"  forger at {FORGER_SOURCE} as {CARRIER[1]}: {exc.code} {exc.message}")
            return
        raise RuntimeError("the relay forwarded a forged sender: sender authentication is off?")

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
            base = order_event(self.run, STORES[0], n, status, datetime.now(UTC))
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
    key, settings = demo_key(settings), settings.model_copy(update={"encryption_key": None})
    demo = Demo(settings, orders_per_store)
    say(f"Conversation Tracker demo (run {demo.run}) on the local stack")
    created = await ensure_topics(settings, settings.topic_partitions, 1)
    demo.step(f"topics: {', '.join(created) or 'already there'}")
    client = mongo.connect(settings, app_name="ct-demo")
    db = client[settings.mongo_db]
    for store_id, name, _, mask, _, _ in STORES:
        await StoreSettings(db).set_mask(store_id, mask)
        demo.step(f"store {store_id} ({name}): {mask.value} aliases")
    http_port = DEMO_HTTP_PORT
    log_path = state_dir() / "run" / "demo-workers.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if not await dns_answers(DEMO_DNS):
        return 1
    env = worker_env(settings, key, http_port)
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
            lambda: workers_ready(http_port), "the workers to be ready (see " + str(log_path) + ")"
        )
        demo.step(
            f"workers up in one process (pid {worker.pid}): notifier, projector, "
            f"relay on :{settings.relay_port} (sender authentication "
            f"{env['CT_RELAY_SENDER_AUTH']}, DNS {env['CT_DNS_RESOLVERS']})"
        )
        demo.step("orders of two stores, one hard-masked and one soft:")
        demo.plan_orders()
        demo.step("order-status events to Kafka, step by step; the notifier emails each one:")
        for step in range(len(JOURNEY) - 1):
            await demo.emit_step(step)
        demo.step("a carrier writes to a customer's alias; the customer answers through the relay:")
        await demo.carrier_and_reply(demo.order_ids[0])
        await demo.carrier_and_reply(demo.order_ids[-1])
        await demo.forged_carrier(demo.order_ids[0])
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
    await show(demo, db, await _subjects(settings, db, key))
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


async def _has(db: mongo.Database, order_id: str, kind: str, count: int) -> bool:
    entries = await get_timeline(db, order_id) or []
    return sum(e.kind.value == kind for e in entries) >= count


async def _entries(db: mongo.Database, order_ids: list[str], want: int) -> bool:
    timelines = await asyncio.gather(*(get_timeline(db, order_id) for order_id in order_ids))
    return sum(len(entries or []) for entries in timelines) >= want


async def _subjects(settings: Settings, db: mongo.Database, key: str) -> Subjects:
    """What opens the timelines' personal fields, with the demo's key."""
    dialect = await detect_dialect(db, settings.mongo_dialect)
    cipher = AddressCipher([decode_key(key)])
    clock = SystemClock()
    keys = SubjectKeys(db, cipher, clock=clock)
    aliases = AliasStore(
        db, cipher, domain=settings.domain, ttl_days=settings.alias_ttl_days, clock=clock,
        dialect=dialect, subject_keys=keys,
    )  # fmt: skip
    return Subjects(keys, aliases)


async def show(demo: Demo, db: mongo.Database, subjects: Subjects) -> None:
    mail = demo.my_mail()
    say(f"\nEmails captured by the SMTP sink ({len(mail)}): the real address only in the envelope")
    say(f"  {'envelope to (real)':<36} {'From (masked)':<72} Subject")
    for m in mail:
        sender = m["headers"].get("From", "")[:72]
        say(f"  {m['rcptTos'][0]:<36} {sender:<72} {m['headers'].get('Subject', '')[:70]}")
    for order_id in [*demo.order_ids, *([demo.bounced_order] if demo.bounced_order else [])]:
        entries = await get_timeline(db, order_id, subjects) or []
        say("\n" + format_table(order_id, entries))
