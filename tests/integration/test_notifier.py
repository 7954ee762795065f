"""The notifier against real Kafka, FerretDB and an SMTP capture server over sockets."""

from __future__ import annotations

import os
import re
import subprocess
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any

import pytest

from tests.conftest import REPO, Capture
from tests.helpers import CODEC, produce, read_topic, running
from tests.support.commands import counted
from tests.support.dkim import mail_dkim
from tests.support.dns import LoopbackDns
from tests.support.events import order_event
from tests.support.kafka import consumed_to_the_end, topic_size
from tests.support.polling import eventually
from tests.support.timelines import subjects_of
from worker.adapters import mongo
from worker.apps.notifier import NotifierService
from worker.apps.projector import ProjectorService
from worker.contracts.events import OrderStatus, OrderStatusChanged
from worker.core.config import Settings
from worker.core.crypto import AddressCipher, generate_key
from worker.domain.notifications import notification_event_id
from worker.domain.verp import BounceRef
from worker.services.outbound import MailKeys
from worker.services.timeline import get_timeline

pytestmark = pytest.mark.stack
HARD = r"[0-9a-f]{32}@ct\.example\.com"
STATUSES = [s for s in OrderStatus if s != OrderStatus.UNKNOWN]
EXPECTED_SUBJECT = {
    ("en", OrderStatus.PAYMENT_APPROVED): "payment",
    ("en", OrderStatus.SHIPPED): "on its way",
    ("pt-BR", OrderStatus.SHIPPED): "a caminho",
    ("pt-BR", OrderStatus.CANCELED): "cancelado",
}


def _notifier(settings: Settings) -> NotifierService:
    return NotifierService(
        settings, CODEC, AddressCipher(settings.data_keys()), MailKeys.load(settings)
    )


async def _emit(settings: Settings, *events: OrderStatusChanged) -> None:
    await produce(
        settings, settings.topic_order_status, [(e.order_id, CODEC.encode(e)) for e in events]
    )


def _waves(tag: str, *, orders: int) -> list[OrderStatusChanged]:
    """Three statuses of each order, a wave of every order's status at a time (as the bench)."""
    statuses = (OrderStatus.PAYMENT_APPROVED, OrderStatus.HANDLING, OrderStatus.SHIPPED)
    return [
        order_event(f"o-{tag}-{k}", s, customer_email=f"{tag}.{k}@example.org", tracking_code="T-1")
        for s in statuses
        for k in range(orders)
    ]


def _parse(raw: bytes) -> EmailMessage:
    return message_from_bytes(raw, policy=default_policy)


async def test_every_status_in_both_locales_is_emailed_through_the_aliases(
    topics: Settings, with_capture: Settings, capture: Capture, dkim_dns: LoopbackDns
) -> None:
    """...from the store alias, DKIM-signed (verified by Mail::DKIM against the DNS), with a
    VERP return path that names the notification."""
    events = [
        order_event(
            f"o-{locale}-{status.value}", status, locale=locale, customer_email=f"c.{i}@example.org"
        )
        for i, (locale, status) in enumerate((lo, st) for lo in ("en", "pt-BR") for st in STATUSES)
    ]
    await _emit(with_capture, *events)
    async with running(_notifier(with_capture)):
        await eventually(lambda: len(capture.messages()) == len(events), what="12 emails")
    by_rcpt = {m["rcptTos"][0]: m for m in capture.messages()}
    bounce_addresses = MailKeys.load(with_capture).bounce_addresses
    for i, event in enumerate(events):
        entry = by_rcpt[f"c.{i}@example.org"]
        message = _parse(capture.raw(entry))
        assert re.fullmatch(rf"Shop Example <{HARD}>", str(message["From"]))
        assert re.fullmatch(rf"Jane Roe <{HARD}>", str(message["To"]))
        assert message["Reply-To"].addresses[0].addr_spec == message["From"].addresses[0].addr_spec
        ref = bounce_addresses.verify(entry["mailFrom"], datetime.now(UTC))
        assert isinstance(ref, BounceRef) and ref.message_event_id == notification_event_id(
            event.event_id
        )
        verdict = mail_dkim(capture.raw(entry), dkim_dns)[0]
        assert verdict.startswith("pass d=ct.example.com s=t2026 a=rsa-sha256"), verdict
        assert event.order_id in str(message["Subject"])
        want = EXPECTED_SUBJECT.get((event.customer.locale or "en", event.status))
        if want:
            assert want in str(message["Subject"]).lower()
        assert message.get_content_type() == "multipart/alternative"
        text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
        assert event.order_id in text and event.order_id in html
        if event.status == OrderStatus.SHIPPED:
            assert "BR123456789XX" in text
        if event.status == OrderStatus.INVOICED:
            assert "NF-000123" in text
        money = "R$ 1.234,56" if event.customer.locale == "pt-BR" else "$1,234.56"
        if event.status == OrderStatus.PAYMENT_APPROVED:
            assert money in text.replace("\xa0", " ")
        assert "c." not in str(message["To"])  # the real address is only in the envelope


async def test_a_redelivered_event_sends_one_email(
    topics: Settings, with_capture: Settings, capture: Capture, db: mongo.Database
) -> None:
    event = order_event("o-redeliver")
    await _emit(with_capture, event, event)
    async with running(_notifier(with_capture)):
        await eventually(lambda: len(capture.messages()) >= 1, what="the email")
        await read_topic(with_capture, with_capture.topic_timeline, want=2)
    first = await topic_size(with_capture, with_capture.topic_timeline)
    # a new consumer group re-reads everything: a restart that lost its offsets
    again = with_capture.model_copy(
        update={"group_notifier": with_capture.group_notifier + "-again"}
    )
    async with running(_notifier(again)):
        await read_topic(with_capture, with_capture.topic_timeline, want=first + 2)
    assert len(capture.messages()) == 1
    total = await topic_size(with_capture, with_capture.topic_timeline)
    values = [
        r.value for r in await read_topic(with_capture, with_capture.topic_timeline, want=total)
    ]
    assert len(set(values)) == 2  # only ever the same two events, republished as they were


async def test_451_then_250_gives_exactly_one_email(
    topics: Settings, with_capture: Settings, capture: Capture
) -> None:
    capture.refuse("451 4.3.0 Try again later")
    await _emit(with_capture, order_event("o-451"))
    async with running(_notifier(with_capture)):
        await eventually(lambda: capture.handler.refused >= 2, what="the 451 answered twice")
        assert capture.messages() == []
        capture.accept()
        await eventually(lambda: len(capture.messages()) == 1, what="the email after 451")
        await consumed_to_the_end(
            with_capture, with_capture.topic_order_status, with_capture.group_notifier
        )
    assert len(capture.messages()) == 1


async def test_a_550_is_recorded_as_delivery_failed_on_the_timeline(
    topics: Settings, with_capture: Settings, capture: Capture, db: mongo.Database
) -> None:
    capture.refuse("550 5.1.1 Mailbox does not exist")
    await _emit(with_capture, order_event("o-550"))
    async with running(_notifier(with_capture), ProjectorService(with_capture, CODEC)):
        entries = await eventually(
            lambda: _timeline(db, "o-550", 2, with_capture), what="two entries"
        )
    kinds = [e.kind.value for e in entries]
    assert kinds == ["STATUS_CHANGED", "DELIVERY_FAILED"]
    assert entries[1].message is not None
    assert entries[1].message.reason == "550 5.1.1 Mailbox does not exist"
    assert entries[1].delivery is not None and entries[1].delivery.status == "5.1.1"
    assert capture.messages() == []


async def test_an_upstream_that_says_no_such_user_suppresses_the_orders_next_email(
    topics: Settings, with_capture: Settings, capture: Capture, db: mongo.Database
) -> None:
    """A 5.1.1 refusal is as good as a bounce: the address does not work, so the next status
    is recorded as DELIVERY_FAILED `suppressed`, without an attempt."""
    capture.refuse("550 5.1.1 <jane.roe@example.org>: Recipient address rejected")
    at = datetime.now(UTC)
    await _emit(with_capture, order_event("o-no-user", at=at))
    async with running(_notifier(with_capture), ProjectorService(with_capture, CODEC)):
        entries = await eventually(
            lambda: _timeline(db, "o-no-user", 2, with_capture), what="the refusal"
        )
        capture.accept()
        await _emit(
            with_capture,
            order_event("o-no-user", OrderStatus.HANDLING, at=at + timedelta(seconds=1)),
        )
        entries = await eventually(
            lambda: _timeline(db, "o-no-user", 4, with_capture), what="the next one"
        )
    refused, suppressed = [e for e in entries if e.kind.value == "DELIVERY_FAILED"]
    assert refused.message is not None and "jane.roe" not in (refused.message.reason or "")
    assert refused.message.reason == "550 5.1.1 <address>: Recipient address rejected"
    assert suppressed.message is not None and suppressed.message.reason == "suppressed"
    assert capture.messages() == []


async def _timeline(
    db: mongo.Database, order_id: str, want: int, settings: Settings | None = None
) -> Any:
    """The order's entries once there are `want`; opened, given the settings."""
    entries = await get_timeline(db, order_id, subjects_of(settings, db) if settings else None)
    return entries if entries and len(entries) >= want else None


async def test_a_name_with_cr_lf_cannot_add_a_header(
    topics: Settings, with_capture: Settings, capture: Capture
) -> None:
    await _emit(with_capture, order_event("o-inject", first_name="Eve\r\nBcc: attacker@evil.test"))
    async with running(_notifier(with_capture)):
        await eventually(lambda: len(capture.messages()) == 1, what="the email")
    [entry] = capture.messages()
    raw = capture.raw(entry)
    header_block = raw.split(b"\r\n\r\n", 1)[0]
    assert not re.search(rb"^Bcc:", header_block, re.MULTILINE | re.IGNORECASE)
    assert entry["rcptTos"] == ["jane.roe@example.org"]


async def test_unknown_status_and_missing_tracking_go_to_the_dlq_and_others_flow(
    topics: Settings, with_capture: Settings, capture: Capture
) -> None:
    shipped = order_event("o-bad-ship", OrderStatus.SHIPPED)
    no_tracking = shipped.model_copy(update={"tracking_code": None})
    unknown = order_event("o-unknown", OrderStatus.UNKNOWN)
    good = order_event("o-good")
    await _emit(with_capture, no_tracking, unknown, good)
    async with running(_notifier(with_capture)):
        dead = await read_topic(with_capture, with_capture.topic_dlq, want=2)
        await eventually(lambda: len(capture.messages()) == 1, what="the good email")
    reasons = sorted(dict(r.headers)["ct.dlq.reason"].decode() for r in dead)
    assert "tracking" in reasons[0].lower() and "UNKNOWN" in reasons[1]
    for record in dead:
        assert b"jane.roe" not in b"".join(v for _, v in record.headers)


async def test_end_to_end_events_in_emails_out_and_the_order_document_shows_the_timeline(
    topics: Settings, with_capture: Settings, capture: Capture, db: mongo.Database
) -> None:
    journey = [
        order_event("o-e2e", status, at=order_event("x").occurred_at.replace(hour=10 + i))
        for i, status in enumerate(STATUSES[:5])
    ]
    await _emit(with_capture, *journey)
    async with running(_notifier(with_capture), ProjectorService(with_capture, CODEC)):
        entries = await eventually(lambda: _timeline(db, "o-e2e", 10), what="ten entries")
    assert len(capture.messages()) == 5
    statuses = [e.status.value for e in entries if e.kind.value == "STATUS_CHANGED" and e.status]
    assert statuses == [s.value for s in STATUSES[:5]]
    doc = await db["orders"].find_one({"_id": "o-e2e"})
    assert doc is not None and doc["status"] == "DELIVERED"
    sent = [e for e in entries if e.kind.value == "NOTIFICATION_SENT"]
    assert all(e.message and re.fullmatch(HARD, e.message.to.alias) for e in sent)
    assert "jane.roe@example.org" not in str(doc)


def test_the_notifier_refuses_to_start_without_an_encryption_key() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CT_")}
    result = subprocess.run(
        [str(REPO / ".venv/bin/ct"), "run", "notifier"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "CT_ENCRYPTION_KEY" in result.stderr and "ct keygen" in result.stderr


@pytest.mark.parametrize(
    ("dkim_env", "named"),
    [
        ({}, "CT_DKIM_SELECTOR is not set"),
        ({"CT_DKIM_SELECTOR": "s1", "CT_DKIM_PRIVATE_KEY_FILE": "/nonexistent/dkim.pem"},
         "CT_DKIM_PRIVATE_KEY_FILE: cannot read /nonexistent/dkim.pem"),
    ],
)  # fmt: skip
def test_the_notifier_refuses_to_start_without_a_readable_dkim_key(
    dkim_env: dict[str, str], named: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CT_")}
    env |= {"CT_ENCRYPTION_KEY": generate_key(), **dkim_env}
    result = subprocess.run(
        [str(REPO / ".venv/bin/ct"), "run", "notifier"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and named in result.stderr, result.stderr


async def test_each_email_is_one_database_write_and_new_orders_are_made_a_poll_at_a_time(
    topics: Settings, with_capture: Settings, capture: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    commands = counted(monkeypatch)
    events = _waves("writes", orders=20)
    await _emit(with_capture, *events)
    async with running(_notifier(with_capture)):
        await read_topic(with_capture, with_capture.topic_timeline, want=2 * len(events))
    assert len(capture.messages()) == len(events)
    writes = commands.writes()
    # The deployment's daily retention run, due at the first start: its claim (with the purge
    # of claims past CLAIMS_KEPT), one sweep of the messages, one audit entry.
    claim = (("insert", "schedule_claims"), ("update", "schedules"), ("delete", "schedule_claims"))
    for retention in (*claim, ("update", "messages"), ("insert", "audit")):
        assert writes.pop(retention, 0) <= 1
    # One write per email: the message kept with the outcome of its send.
    assert writes.pop(("insert", "messages")) == len(events)
    # The 20 new orders' subject keys, aliases and claims: a few unordered inserts per poll,
    # where one order at a time made six (120 here).
    assert set(writes) <= {
        ("insert", c) for c in ("subjects", "subject_ids", "aliases", "alias_keys")
    }
    assert sum(writes.values()) <= 20, writes
    # Reads: a few per poll (the ledger's, the suppressions', the aliases', the subjects' and
    # the stores', each for the whole poll), on MongoDB and on the local stack's FerretDB, which
    # serves a list of _ids from the index (dialect.py). One read per id was two per event here.
    assert commands.reads() <= 0.5 * len(events), sorted(commands.sent.items())


async def test_a_poll_of_orders_the_cache_forgot_is_read_in_a_few_queries(
    topics: Settings, with_capture: Settings, capture: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Orders come back after the cache dropped them (production: hours between an order's
    events). Each poll reads its orders' aliases, windows and customers' keys together, so
    reads stay a few per poll; read order by order, they were about nine per event."""
    settings = with_capture.model_copy(update={"alias_cache_size": 1, "batch_max_records": 10})
    events = _waves("cold", orders=40)  # 40 orders, a cache of 20 (two polls' worth)
    await _emit(settings, *events)
    commands = counted(monkeypatch)
    async with running(_notifier(settings)):
        await read_topic(settings, settings.topic_timeline, want=2 * len(events))
    assert len(capture.messages()) == len(events)
    polls = len(events) / settings.batch_max_records
    # Per poll: the ledger, the suppressions, two rounds of claims and aliases with their
    # windows, the customers' keys and the stores'; some polls are split by partition.
    assert commands.reads() <= 12 * polls, sorted(commands.sent.items())
