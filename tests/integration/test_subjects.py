"""A customer's data on request, through the real notifier, relay, projector and `ct`.

One person with two orders in two stores, a carrier's message with an attachment, a bounce and a
dead letter: `ct subject export` has every item; `ct subject erase` leaves nothing that names
them, not in any MongoDB collection, not on our Kafka topics, not after replaying the timeline
topic into a fresh database; their aliases refuse mail `550 5.1.1`; the console, `ct timeline`
and the API's source show `erased`; and a new order from the same address is emailed as a new
subject. Key rotation: subject keys are rewrapped, their data stays readable, erasure stays final.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import Awaitable, Iterable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import parseaddr
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from pydantic import SecretStr

from tests.conftest import REPO, Capture
from tests.helpers import CODEC, produce, running, settings_env
from tests.support.events import order_event, timeline_event
from tests.support.kafka import topic_size
from tests.support.polling import eventually
from tests.support.relay_client import rcpt_code
from tests.support.scans import flatten, scan_everything, scan_mongo, scan_topic
from tests.support.timelines import opened_timeline
from worker.adapters import mongo
from worker.adapters.dead_letters import dead_letters
from worker.adapters.dialect import Dialect, detect_dialect
from worker.adapters.dlq import DeadLetterQueue
from worker.adapters.order_queries import OrderQueries
from worker.apps.builder import Stores
from worker.apps.notifier import NotifierService
from worker.apps.projector import ProjectorService
from worker.apps.relay import RelayService
from worker.contracts.events import (
    Customer,
    OrderStatus,
    OrderStatusChanged,
    TimelineEvent,
    TimelineKind,
)
from worker.core.config import Settings
from worker.core.crypto import AddressCipher, generate_key
from worker.devtools.demo_bounce import delivery_status_notification
from worker.domain.aliases import SystemClock
from worker.domain.personal import ERASED, open_event, seal_event
from worker.services.accounts import platform_operator
from worker.services.console import Console
from worker.services.subjects import DeadLetterSeal
from worker.services.timeline import get_timeline

pytestmark = [pytest.mark.stack, pytest.mark.slow]
CT = str(REPO / ".venv" / "bin" / "ct")
CARRIER = "tracking@carrier.example.net"


class Person:
    """Someone whose every trace is unique to this test, so a scan can look for it."""

    def __init__(self) -> None:
        run = uuid.uuid4().hex[:8]
        self.email = f"ana.{run}@example.org"
        self.first, self.last = f"Anastacia{run}", f"Pessoa{run}"
        self.subject = f"Your parcel {run} is at the depot"
        self.body = f"Parcel {run}X waits for you at the depot on Rua Sete"
        self.attachment = f"label-{run}.pdf"
        self.orders = (f"o-a-{run}", f"o-b-{run}")
        self.stores = (f"store-a-{run}", f"store-b-{run}")

    def traces(self) -> dict[str, bytes]:
        return {
            "address": self.email.encode(), "first name": self.first.encode(),
            "last name": self.last.encode(), "subject": self.subject.encode(),
            "body text": self.body.split(" at ")[0].encode(),
            "attachment name": self.attachment.encode(),
        }  # fmt: skip

    def event(
        self, order_id: str, store_id: str, status: OrderStatus, **extra: Any
    ) -> OrderStatusChanged:
        customer = Customer(email=self.email, first_name=self.first, last_name=self.last)
        event = order_event(order_id, status, store_id=store_id, **extra)
        return event.model_copy(update={"customer": customer})


async def _emit(settings: Settings, *events: OrderStatusChanged) -> None:
    items = [(e.order_id, CODEC.encode(e)) for e in events]
    await produce(settings, settings.topic_order_status, items)


async def _carrier_mail(port: int, to: str, person: Person) -> int:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = CARRIER, to, person.subject
    message.set_content(person.body)
    message.add_attachment(
        b"%PDF-1.4 label", maintype="application", subtype="pdf", filename=person.attachment
    )
    return await rcpt_code(message, port, CARRIER, to)


async def _bounce(port: int, notification: bytes, person: Person, return_path: str) -> None:
    report = delivery_status_notification(notification, person.email, return_path)
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as relay:
        await relay.sendmail("", [return_path], report)


async def _ct(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    done = await asyncio.to_thread(
        subprocess.run, [CT, *args], capture_output=True, text=True,
        env=settings_env(settings.model_copy(update={"relay_port": 2525})),
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, (args, done.stderr[-2000:])
    return done


async def _kinds(settings: Settings, db: mongo.Database, order_id: str) -> list[TimelineKind]:
    return [e.kind for e in await opened_timeline(settings, db, order_id) or []]


def _texts(entries: Iterable[TimelineEvent]) -> str:
    return "\n".join(e.model_dump_json() for e in entries)


async def test_export_then_erasure_leaves_nothing_that_names_the_person(
    topics: Settings, with_capture: Settings, capture: Capture, db: mongo.Database, tmp_path: Path
) -> None:
    person = Person()
    dialect = await detect_dialect(db)
    settings = with_capture.model_copy(update={"relay_port": 0, "alias_cache_size": 0})
    cipher = AddressCipher(settings.data_keys())
    relay = RelayService(settings, CODEC, cipher)
    (order_a, order_b), (store_a, store_b) = person.orders, person.stores
    async with running(
        NotifierService(settings, CODEC, cipher), relay, ProjectorService(settings, CODEC)
    ):
        assert relay.port is not None
        await _emit(
            settings,
            person.event(order_a, store_a, OrderStatus.PAYMENT_APPROVED),
            person.event(order_b, store_b, OrderStatus.SHIPPED),
            # Unprocessable (the store's address): dead-lettered with the person's data in it.
            person.event(f"{order_a}-bad", store_a, OrderStatus.HANDLING, store_email="nobody"),
        )
        mails = await eventually(
            lambda: len(capture.messages()) >= 2 and capture.messages(), what="both emails"
        )
        paid = next(m for m in mails if "payment" in m["headers"]["Subject"].lower())
        shipped = next(m for m in mails if m is not paid)
        customer_alias_a = parseaddr(paid["headers"]["To"])[1]
        assert await _carrier_mail(relay.port, customer_alias_a, person) == 250
        await _bounce(relay.port, capture.raw(shipped), person, shipped["mailFrom"])
        await eventually(
            lambda: _has(settings, db, order_a, TimelineKind.MESSAGE_FORWARDED), what="forward"
        )
        await eventually(
            lambda: _has(settings, db, order_b, TimelineKind.DELIVERY_FAILED), what="bounce"
        )
        await eventually(lambda: topic_size(settings, settings.topic_dlq), what="dead letter")

        exported = tmp_path / "export.json"
        await _ct(settings, "subject", "export", "--email", person.email.upper(),
                  "--reason", "LGPD art. 18 request #1", "--out", str(exported))  # fmt: skip
        document = json.loads(exported.read_text())
        _assert_export_is_complete(document, person)

        [letter] = [letter async for letter in dead_letters(settings, group=None)]
        assert person.email.encode() not in (letter.record.value or b"")
        seal = DeadLetterSeal(CODEC, Stores(db, dialect, settings, cipher).subject_keys)
        opened = await seal.open(letter)  # replayable while the person is not erased
        assert opened is not None
        assert CODEC.decode(opened, OrderStatusChanged).customer.email == person.email
        replay = await _ct(settings, "dlq", "replay")  # back to the OMS topic, opened
        assert "replayed 1 record(s)" in replay.stdout
        await eventually(  # the notifier refuses it again: a second dead letter, sealed too
            lambda: _at_least(topic_size(settings, settings.topic_dlq), 2), what="dead again"
        )

        # Even before erasure nothing in MongoDB holds the person in clear: it is all sealed.
        before = await scan_mongo(db, person.traces())
        assert [where for where, found in before.items() if found] == [], before
        erased = await _ct(settings, "subject", "erase", "--email", person.email,
                           "--reason", "GDPR art. 17 request #2")  # fmt: skip
        assert "erased 1 key(s), 2 alias(es) of 2 order(s)" in erased.stdout
        again = await _ct(settings, "subject", "erase", "--email", person.email,
                          "--reason", "GDPR art. 17 request #2")  # fmt: skip
        assert "already erased" in again.stdout
        print(f"\n$ ct subject erase ...\n{erased.stdout}{again.stdout}")

        # Mail to the person's aliases is refused, and recorded without personal data.
        assert await _carrier_mail(relay.port, customer_alias_a, person) == 550
        await eventually(
            lambda: _has(settings, db, order_a, TimelineKind.MESSAGE_REJECTED), what="refusal"
        )
        assert await seal.open(letter) is None  # the dead letter stays sealed for good
        replay = await _ct(settings, "dlq", "replay")  # the second letter: not replayable
        assert "replayed 0 record(s)" in replay.stdout

    traces = person.traces()
    shown = await _ct(settings, "timeline", order_a)
    assert ERASED in shown.stdout and not [t for t in traces.values() if t.decode() in shown.stdout]
    page = await _console(settings, db, dialect, cipher).order_page(
        order_a, platform_operator("dpo")
    )
    erased_items = [m for m in page.conversation.messages if m.subject == ERASED]
    assert len(erased_items) == 2  # the notification and the carrier's message; kinds stay
    [forwarded] = [m for m in erased_items if m.attachment_names]
    assert forwarded.attachment_names == (ERASED,) and forwarded.first_words == ERASED
    assert page.kept == {}  # the kept messages are gone
    assert all(m.recipient.name in (None, ERASED) for m in page.conversation.messages)

    # Replay the whole timeline topic into an empty database: nothing comes back.
    fresh = settings.model_copy(
        update={"mongo_db": settings.mongo_db + "_replay",
                "group_projector": settings.group_projector + "-replay"}
    )  # fmt: skip
    replayed_db = db.client[fresh.mongo_db]
    try:
        async with running(ProjectorService(fresh, CODEC)):
            await eventually(
                lambda: _both_orders(replayed_db, person.orders), what="the replayed orders"
            )
        replayed = await get_timeline(replayed_db, order_a) or []
        assert replayed and not [t for t in traces.values() if t.decode() in _texts(replayed)]
        scan = await scan_everything(settings, db, replayed_db, traces)
    finally:
        await db.client.drop_database(fresh.mongo_db)
    print("\nscan after erasure:\n" + json.dumps(scan, indent=2))
    oms = await scan_topic(settings, settings.topic_order_status, traces)
    print(f"(the OMS's own input topic, not ours to rewrite, holds: {oms})")
    assert oms == ["address", "first name", "last name"]  # the scan does see what is there
    assert [where for where, found in flatten(scan) if found] == []

    # The same address, a new order: a new subject, emailed and shown.
    emailed = len([m for m in capture.messages() if m["rcptTos"] == [person.email]])
    async with running(NotifierService(settings, CODEC, cipher), ProjectorService(settings, CODEC)):
        new_order = f"{order_a}-new"
        # A later status of an erased order emails nobody; the new order is a new subject.
        await _emit(settings, person.event(order_a, store_a, OrderStatus.SHIPPED, at=_later()))
        await _emit(settings, person.event(new_order, store_a, OrderStatus.PAYMENT_APPROVED))
        await eventually(
            lambda: _has(settings, db, new_order, TimelineKind.NOTIFICATION_SENT), what="new"
        )
        await eventually(
            lambda: _has(settings, db, order_a, TimelineKind.DELIVERY_FAILED), what="not sent"
        )
    assert len([m for m in capture.messages() if m["rcptTos"] == [person.email]]) == emailed + 1
    entries = await opened_timeline(settings, db, new_order) or []
    sent = next(e for e in entries if e.kind is TimelineKind.NOTIFICATION_SENT)
    assert sent.message is not None and sent.message.to.name == f"{person.first} {person.last}"
    subjects = await Stores(db, dialect, settings, cipher).subject_keys.of_address(person.email)
    assert len(subjects) == 2 and subjects[0].erased_at and not subjects[1].erased_at


async def _at_least(count: Awaitable[int], want: int) -> bool:
    return await count >= want


def _later() -> datetime:
    return datetime.now(UTC)


def _assert_export_is_complete(document: dict[str, Any], person: Person) -> None:
    assert document["email"] == person.email
    assert {o["storeId"] for o in document["orders"]} == set(person.stores)
    customer = [a for a in document["aliases"] if a["role"] == "CUSTOMER"]
    assert {a["orderId"] for a in customer} == set(person.orders)
    assert all(a["name"] == f"{person.first} {person.last}" for a in customer)
    entries = [e for o in document["orders"] for e in o["timeline"]]
    kinds = {e["kind"] for e in entries}
    assert {"STATUS_CHANGED", "NOTIFICATION_SENT", "MESSAGE_FORWARDED", "DELIVERY_FAILED"} <= kinds
    [forward] = [e for e in entries if e["kind"] == "MESSAGE_FORWARDED"]
    assert forward["message"]["subject"] == person.subject
    assert forward["message"]["attachmentNames"] == [person.attachment]
    assert forward["message"]["firstWords"].startswith(person.body.split(" on ")[0])
    [bounce] = [e for e in entries if e["kind"] == "DELIVERY_FAILED"]
    assert "User unknown" in bounce["delivery"]["diagnostic"]
    assert not any("ct-sealed:" in json.dumps(e) for e in entries)
    notified = [e for e in entries if e["kind"] == "NOTIFICATION_SENT"]
    assert all(e["message"]["to"]["name"] == f"{person.first} {person.last}" for e in notified)
    kept = document["messages"]
    assert len(kept) == 3  # two notifications, one forward
    [carrier] = [m for m in kept if m["headers"]["subject"] == person.subject]
    assert [a["filename"] for a in carrier["attachments"]] == [person.attachment]
    assert person.body in (carrier["text"] or "")
    assert [s["orderId"] for s in document["suppressions"]] == [person.orders[1]]


async def _has(settings: Settings, db: mongo.Database, order_id: str, kind: TimelineKind) -> bool:
    return kind in await _kinds(settings, db, order_id)


async def _both_orders(db: mongo.Database, order_ids: Iterable[str]) -> bool:
    docs = [await db["orders"].find_one({"_id": o}, {"entryCount": 1}) for o in order_ids]
    return all(d is not None and d["entryCount"] >= 3 for d in docs)


def _console(
    settings: Settings, db: mongo.Database, dialect: Dialect, cipher: AddressCipher
) -> Console:
    stores = Stores(db, dialect, settings, cipher, cache_aliases=False)
    return Console(
        db=db, aliases=stores.aliases, messages=stores.messages, audit=stores.audit,
        stores=stores.store_settings, orders=OrderQueries(db),
        dead_letters=DeadLetterQueue(settings, db, SystemClock(), dialect),
        suppression=stores.suppression,
        domain=settings.domain, subject_requests=stores.subject_requests,
    )  # fmt: skip


async def test_subject_keys_are_rewrapped_on_rotation_and_erasure_stays_final(
    settings: Settings, db: mongo.Database, dialect: Dialect
) -> None:
    old_key, new_key = settings.encryption_key, SecretStr(generate_key())
    assert old_key is not None
    email = f"rot.{uuid.uuid4().hex[:8]}@example.org"
    before = Stores(db, dialect, settings, AddressCipher(settings.data_keys()))
    key = await before.subject_keys.for_address(email)
    assert key is not None
    sealed = seal_event(timeline_event("o-rot", kind=TimelineKind.NOTIFICATION_SENT), key)
    assert await before.messages.keep(
        event_id="e-rot", order_id="o-rot", store_id="store-1", raw=b"Subject: hi\r\n\r\nbody",
        subject_id=key.subject_id,
    )  # fmt: skip

    rotating = settings.model_copy(
        update={"encryption_key": new_key, "encryption_old_keys": old_key}
    )
    during = Stores(db, dialect, rotating, AddressCipher(rotating.data_keys()))
    assert await during.subject_keys.rewrap_all() == (1, 1)
    assert (await during.messages.reencrypt())[1] == 0  # sealed per subject: nothing rewritten

    after_settings = settings.model_copy(update={"encryption_key": new_key})
    after = Stores(db, dialect, after_settings, AddressCipher(after_settings.data_keys()))
    reopened = await after.subject_keys.key(key.subject_id)
    assert reopened is not None
    assert open_event(sealed, reopened) == open_event(sealed, key)
    again = await after.subject_keys.for_address(email)
    assert again is not None and again.subject_id == key.subject_id  # rehashed, the same subject
    assert await after.messages.open("e-rot", "o-rot") == b"Subject: hi\r\n\r\nbody"

    [subject] = await after.subject_keys.of_address(email)
    assert await after.subject_keys.erase(subject.subject_id)
    both = rotating  # even with the old key back, nothing opens again
    everything = Stores(db, dialect, both, AddressCipher(both.data_keys()))
    assert await everything.subject_keys.key(key.subject_id) is None
    assert await everything.messages.open("e-rot", "o-rot") is None
    message = open_event(sealed, None).message
    assert message is not None and message.subject == ERASED


async def test_an_erased_address_gets_a_new_key_only_for_an_order_made_after_the_erasure(
    settings: Settings, db: mongo.Database, dialect: Dialect
) -> None:
    """A worker whose caches still hold an erased person's old order must not give it a key."""
    keys = Stores(db, dialect, settings, AddressCipher(settings.data_keys())).subject_keys
    email = f"stale.{uuid.uuid4().hex[:8]}@example.org"
    first = await keys.for_address(email)
    assert first is not None
    ordered_before = datetime.now(UTC)
    await asyncio.sleep(0.01)
    assert await keys.erase(first.subject_id) and not await keys.erase(first.subject_id)
    assert await keys.for_address(email, since=ordered_before) is None
    assert await keys.for_address(email) is None  # nothing says the order is newer
    await asyncio.sleep(0.01)
    newer = await keys.for_address(email, since=datetime.now(UTC))
    assert newer is not None and newer.subject_id != first.subject_id
    assert [s.erased_at is not None for s in await keys.of_address(email)] == [True, False]
