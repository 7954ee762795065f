"""The relay over real sockets (smtplib and aiosmtplib clients), with real Kafka and FerretDB."""

from __future__ import annotations

import asyncio
import os
import re
import smtplib
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any

import aiosmtplib
import pytest

from tests.conftest import REPO, Capture
from tests.helpers import CODEC, read_topic, running
from tests.support.clock import MovableClock
from tests.support.commands import Commands, counted
from tests.support.dkim import mail_dkim
from tests.support.dns import LoopbackDns
from tests.support.kafka import topic_size
from tests.support.polling import eventually
from tests.support.senders import SenderDomain, publish_all
from tests.support.timelines import subjects_of
from worker.adapters import mongo
from worker.adapters.alias_store import AliasStore
from worker.adapters.dialect import detect_dialect
from worker.apps.projector import ProjectorService
from worker.apps.relay import RelayService
from worker.contracts.events import TimelineEvent
from worker.core.config import Settings
from worker.core.crypto import AddressCipher
from worker.domain.aliases import Party, SystemClock

pytestmark = pytest.mark.stack
CUSTOMER = "jane.roe@example.org"
STORE = "orders@shop.example.com"
CARRIER = "tracking@carrier.example.net"
STRANGER = "someone@elsewhere.example"
# The participants' mail servers: their domains' SPF records authorise these client addresses.
GENUINE, ALSO_GENUINE, FORGER = "127.0.0.1", "127.0.0.2", "127.0.0.3"
SHOP = SenderDomain("shop.example.com", (GENUINE, ALSO_GENUINE), "v=DMARC1; p=none")
CUSTOMER_DOMAIN = SenderDomain("example.org", (GENUINE, ALSO_GENUINE))  # no DMARC record
CARRIER_DOMAIN = SenderDomain("carrier.example.net", (GENUINE, ALSO_GENUINE), "v=DMARC1; p=reject")


@pytest.fixture(scope="session")
def sender_dns(dns_server: LoopbackDns) -> LoopbackDns:
    """The participants' SPF, DKIM and DMARC records, published once for the session."""
    publish_all(dns_server, SHOP, CUSTOMER_DOMAIN, CARRIER_DOMAIN)
    return dns_server


@dataclass
class Order:
    id: str
    customer_alias: str
    store_alias: str


@dataclass
class Relay:
    port: int
    settings: Settings
    order: Order
    commands: Commands  # what the relay asked of the database

    async def send(
        self, message: EmailMessage | bytes, *, sender: str, to: str, source: str = GENUINE
    ) -> tuple[int, str]:
        """One SMTP session with aiosmtplib from client address `source`; the final reply."""
        try:
            _, reply = await aiosmtplib.send(
                message, hostname="127.0.0.1", port=self.port, sender=sender, recipients=[to],
                start_tls=False, source_address=(source, 0),
            )  # fmt: skip
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = exc.recipients[0]
            return refused.code, refused.message
        except aiosmtplib.SMTPResponseException as exc:
            return exc.code, exc.message
        return 250, reply


def _mail(
    sender: str, to: str, subject: str, body: str = "Hello there", **headers: str
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content(body)
    return message


@pytest.fixture
async def relay(  # noqa: PLR0917 - pytest passes fixtures by position
    topics: Settings,
    with_capture: Settings,
    db: mongo.Database,
    unique: Any,
    sender_dns: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Relay]:
    # Every test sender shares 127.0.0.1: the per-IP session cap is a test of its own
    # (test_relay_bounded.py), not a limit on the 200 concurrent sessions below.
    settings = with_capture.model_copy(update={"relay_port": 0, "relay_max_sessions_per_ip": 500})
    await mongo.ensure_indexes(db)
    aliases = AliasStore(
        db,
        AddressCipher(settings.data_keys()),
        domain=settings.domain,
        ttl_days=60,
        clock=SystemClock(),
        dialect=await detect_dialect(db),
    )
    order_id = unique("o-relay")
    customer, store = await aliases.order_pair(
        order_id, "store-1", Party(CUSTOMER, "Jane Roe"), Party(STORE, "Shop Example")
    )
    commands = counted(monkeypatch)
    service = RelayService(settings, CODEC, AddressCipher(settings.data_keys()))
    async with running(service):
        assert service.port is not None
        order = Order(order_id, customer.address, store.address)
        yield Relay(service.port, settings, order, commands)


def _forwarded(capture: Capture, subject: str) -> tuple[dict[str, Any], EmailMessage]:
    [entry] = [m for m in capture.messages() if m["headers"].get("Subject") == subject]
    return entry, message_from_bytes(capture.raw(entry), policy=default_policy)


async def test_store_to_customer_then_the_customer_replies_to_the_store(
    relay: Relay, capture: Capture, dkim_dns: LoopbackDns
) -> None:
    """...each forward DKIM-signed after the rewrite (Mail::DKIM verifies it against the DNS)."""
    order = relay.order
    code, _ = await relay.send(
        _mail(STORE, order.customer_alias, "Your order"), sender=STORE, to=order.customer_alias
    )
    assert code == 250
    entry, message = _forwarded(capture, "Your order")
    assert entry["rcptTos"] == [CUSTOMER]
    assert message["From"].addresses[0].addr_spec == order.store_alias
    # The return path is the forward's own VERP address, which names its MESSAGE_FORWARDED.
    assert re.fullmatch(r"bounces\+[a-z2-7]{45}@ct\.example\.com", entry["mailFrom"])
    verdict = mail_dkim(capture.raw(entry), dkim_dns)[0]
    assert verdict.startswith("pass d=ct.example.com s=t2026 a=rsa-sha256"), verdict

    reply = _mail(
        CUSTOMER, order.store_alias, "Re: Your order", In_Reply_To=str(message["Message-ID"])
    )
    code, _ = await relay.send(reply, sender=CUSTOMER, to=order.store_alias)
    assert code == 250
    entry, message = _forwarded(capture, "Re: Your order")
    assert entry["rcptTos"] == [STORE]
    assert message["From"].addresses[0].addr_spec == order.customer_alias
    assert message["In-Reply-To"] == reply["In-Reply-To"]  # threading survives
    header_block = capture.raw(entry).split(b"\r\n\r\n", 1)[0]
    assert CUSTOMER.encode() not in header_block


async def test_a_carrier_gets_a_reverse_alias_the_customer_can_answer_and_strangers_cannot(
    relay: Relay, capture: Capture
) -> None:
    order = relay.order
    notice = _mail(f"Carrier Tracking <{CARRIER}>", order.customer_alias, "Package update")
    assert (await relay.send(notice, sender=CARRIER, to=order.customer_alias))[0] == 250
    entry, message = _forwarded(capture, "Package update")
    reverse = message["From"].addresses[0].addr_spec
    assert entry["rcptTos"] == [CUSTOMER]
    # Marked as external (issue 19): no name of a sender outside the order reads as a participant.
    assert (
        message["From"].addresses[0].display_name
        == "Carrier Tracking (external, carrier.example.net)"
    )
    assert reverse.endswith("@ct.example.com") and reverse not in (
        order.store_alias,
        order.customer_alias,
    )

    again = _mail(f"Carrier Tracking <{CARRIER}>", order.customer_alias, "Package delivered")
    assert (await relay.send(again, sender=CARRIER, to=order.customer_alias))[0] == 250
    assert _forwarded(capture, "Package delivered")[1]["From"].addresses[0].addr_spec == reverse

    answer = _mail(CUSTOMER, reverse, "Re: Package update")
    assert (await relay.send(answer, sender=CUSTOMER, to=reverse))[0] == 250
    entry, message = _forwarded(capture, "Re: Package update")
    assert entry["rcptTos"] == [CARRIER]
    assert message["From"].addresses[0].addr_spec == order.customer_alias

    code, text = await relay.send(_mail(STRANGER, reverse, "Hi"), sender=STRANGER, to=reverse)
    assert (code, text[:5]) == (550, "5.7.1")
    spoofed = _mail(STRANGER, reverse, "Spoof")  # right envelope, wrong From
    code, text = await relay.send(spoofed, sender=CUSTOMER, to=reverse)
    assert (code, text[:5]) == (550, "5.7.1")


async def test_unknown_expired_and_foreign_recipients_get_their_codes(
    relay: Relay, db: mongo.Database
) -> None:
    unknown = "0" * 32 + "@ct.example.com"
    assert (await relay.send(_mail(STORE, unknown, "x"), sender=STORE, to=unknown))[:2] == (
        550, "5.1.1 No such address",
    )  # fmt: skip
    foreign = "someone@gmail.example"
    code, text = await relay.send(_mail(STORE, foreign, "x"), sender=STORE, to=foreign)
    assert (code, text) == (550, "5.7.1 Relaying denied")

    await db["aliases"].update_one(
        {"_id": relay.order.customer_alias},
        {"$set": {"expiresAt": MovableClock().now() - timedelta(days=1)}},
    )
    code, text = await relay.send(
        _mail(STORE, relay.order.customer_alias, "late"),
        sender=STORE,
        to=relay.order.customer_alias,
    )
    assert code == 550 and text.startswith("5.1.1") and "expired" in text
    [record] = await read_topic(relay.settings, relay.settings.topic_timeline, want=1)
    event = CODEC.decode(record.value, TimelineEvent)
    assert event.kind.value == "MESSAGE_REJECTED" and event.order_id == relay.order.id
    assert event.message is not None and event.message.from_.alias == relay.order.store_alias


async def test_an_oversized_message_gets_552(relay: Relay) -> None:
    big = _mail(STORE, relay.order.customer_alias, "big", body="x" * 1000)
    small_limit = relay.settings.relay_max_bytes
    big.add_attachment(
        os.urandom(small_limit + 1024), maintype="application", subtype="octet-stream"
    )
    code, text = await relay.send(big, sender=STORE, to=relay.order.customer_alias)
    assert (code, text[:5]) == (552, "5.3.4")


async def test_an_attachment_survives_byte_for_byte(
    relay: Relay, capture: Capture, db: mongo.Database
) -> None:
    payload = os.urandom(300_000)
    message = _mail(STORE, relay.order.customer_alias, "Your invoice", body="Invoice attached")
    message.add_attachment(
        payload, maintype="application", subtype="pdf", filename="invoice-42.pdf"
    )
    assert (await relay.send(message, sender=STORE, to=relay.order.customer_alias))[0] == 250
    _, forwarded = _forwarded(capture, "Your invoice")
    [attachment] = list(forwarded.iter_attachments())
    assert attachment.get_filename() == "invoice-42.pdf"
    assert attachment.get_content() == payload
    [record] = await read_topic(relay.settings, relay.settings.topic_timeline, want=1)
    on_the_wire = CODEC.decode(record.value, TimelineEvent)
    assert b"invoice-42.pdf" not in record.value  # sealed under the customer's subject key
    [event] = await subjects_of(relay.settings, db).open([on_the_wire])
    assert event.message is not None and event.message.attachment_names == ["invoice-42.pdf"]
    assert event.message.direction.value == "TO_CUSTOMER"
    assert event.message.first_words == "Invoice attached"


async def test_leaky_headers_are_dropped_and_known_addresses_masked(
    relay: Relay, capture: Capture
) -> None:
    message = _mail(
        STORE, f"{relay.order.customer_alias}, {CUSTOMER}", "Leaky",
        Cc=STORE, Received=f"from mail.shop.example.com by mx for <{STORE}>", Return_Path=STORE,
        X_Originating_IP="203.0.113.7", Sender=STORE,
    )  # fmt: skip
    assert (await relay.send(message, sender=STORE, to=relay.order.customer_alias))[0] == 250
    entry, _ = _forwarded(capture, "Leaky")
    header_block = capture.raw(entry).split(b"\r\n\r\n", 1)[0].lower()
    assert STORE.encode() not in header_block
    assert CUSTOMER.encode() not in header_block
    assert b"203.0.113.7" not in header_block
    assert b"\nreceived:" not in header_block


async def test_upstream_down_gives_451_and_no_entry_then_the_retry_records_exactly_one(
    relay: Relay, capture: Capture
) -> None:
    message = _mail(
        STORE, relay.order.customer_alias, "Retry me", Message_ID="<retry-1@shop.example.com>"
    )
    capture.refuse("451 4.3.0 Greylisted")
    code, _ = await relay.send(message, sender=STORE, to=relay.order.customer_alias)
    assert code == 451
    # The relay publishes before it answers (250 only when durable): the topic is final now.
    assert await topic_size(relay.settings, relay.settings.topic_timeline) == 0
    capture.accept()
    assert (await relay.send(message, sender=STORE, to=relay.order.customer_alias))[0] == 250
    assert (await relay.send(message, sender=STORE, to=relay.order.customer_alias))[0] == 250
    records = await read_topic(relay.settings, relay.settings.topic_timeline, want=2)
    assert len({CODEC.decode(r.value, TimelineEvent).event_id for r in records}) == 1


async def test_upstream_unreachable_gives_451(
    topics: Settings, with_capture: Settings, db: mongo.Database, relay: Relay
) -> None:
    dead = relay.settings.model_copy(update={"smtp_port": 1, "relay_port": 0})
    service = RelayService(dead, CODEC, AddressCipher(dead.data_keys()))
    async with running(service):
        assert service.port is not None
        other = Relay(service.port, dead, relay.order, relay.commands)
        code, text = await other.send(
            _mail(STORE, relay.order.customer_alias, "x"),
            sender=STORE,
            to=relay.order.customer_alias,
        )
    assert code == 451 and text.startswith("4.")


async def test_two_hundred_concurrent_sessions_are_all_delivered_and_recorded(
    relay: Relay, capture: Capture
) -> None:
    async def one(i: int) -> int:
        message = _mail(STORE, relay.order.customer_alias, f"Bulk {i}")
        return (await relay.send(message, sender=STORE, to=relay.order.customer_alias))[0]

    codes = await asyncio.gather(*(one(i) for i in range(200)))
    assert codes == [250] * 200
    assert len(capture.messages()) == 200
    records = await read_topic(relay.settings, relay.settings.topic_timeline, want=200)
    assert len({CODEC.decode(r.value, TimelineEvent).event_id for r in records}) == 200


def _smtplib_send(port: int, message: EmailMessage, sender: str, to: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.send_message(message, from_addr=sender, to_addrs=[to])


async def test_the_projector_shows_the_whole_conversation_both_ways_in_ct_timeline(
    relay: Relay, capture: Capture, db: mongo.Database
) -> None:
    order = relay.order
    await asyncio.to_thread(
        _smtplib_send,
        relay.port,
        _mail(STORE, order.customer_alias, "Question about your order"),
        STORE,
        order.customer_alias,
    )
    await asyncio.to_thread(
        _smtplib_send,
        relay.port,
        _mail(
            CUSTOMER, order.store_alias, "Re: Question about your order", body="Yes, please ship it"
        ),
        CUSTOMER,
        order.store_alias,
    )
    async with running(ProjectorService(relay.settings, CODEC)):
        await eventually(lambda: _entries(db, order.id, 2), what="both messages on the timeline")
    assert relay.settings.encryption_key is not None  # `ct timeline` opens what was sealed
    env = {
        **os.environ, "CT_MONGO_DB": relay.settings.mongo_db,
        "CT_ENCRYPTION_KEY": relay.settings.encryption_key.get_secret_value(),
    }  # fmt: skip
    result = await asyncio.to_thread(
        subprocess.run, [str(REPO / ".venv/bin/ct"), "timeline", order.id],
        capture_output=True, text=True, env=env, timeout=60, check=True,
    )  # fmt: skip
    assert "MESSAGE_FORWARDED  customer" in result.stdout
    assert "MESSAGE_FORWARDED  store" in result.stdout
    assert "Yes, please ship it" in result.stdout
    assert CUSTOMER not in result.stdout and STORE not in result.stdout


async def _entries(db: mongo.Database, order_id: str, want: int) -> bool:
    doc = await db["orders"].find_one({"_id": order_id})
    return bool(doc) and len(doc.get("timeline", [])) >= want  # type: ignore[union-attr]


def _raw_send(port: int, sender: str, to: str, raw: bytes) -> tuple[int, str]:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        try:
            client.sendmail(sender, [to], raw)
        except smtplib.SMTPDataError as exc:
            error = exc.smtp_error
            return exc.smtp_code, error.decode() if isinstance(error, bytes) else error
    return 250, ""


async def test_malformed_mail_gets_a_clear_answer_and_never_hurts_another_session(
    relay: Relay, capture: Capture
) -> None:
    alias = relay.order.customer_alias
    no_from = b"To: " + alias.encode() + b"\r\nSubject: no from\r\n\r\nbody\r\n"
    eight_bit = (
        b"From: Jos\xe9 <" + STORE.encode() + b">\r\nTo: " + alias.encode()
        + b"\r\nSubject: caf\xc3\xa9 \xff\r\n\r\nbody\r\n"
    )  # fmt: skip
    bad_mime = (
        b"From: " + STORE.encode() + b"\r\nTo: " + alias.encode() + b"\r\nSubject: bad mime\r\n"
        b'Content-Type: multipart/mixed; boundary="never-closed"\r\n\r\n--never-closed\r\n'
        b"Content-Type: text/plain\r\n\r\nhello\r\n"
    )  # fmt: skip
    many_headers = (
        b"".join(b"X-H%d: v\r\n" % i for i in range(2000))
        + b"From: "
        + STORE.encode()
        + b"\r\n\r\nx\r\n"
    )
    results = await asyncio.gather(
        *(
            asyncio.to_thread(_raw_send, relay.port, STORE, alias, raw)
            for raw in (no_from, eight_bit, bad_mime, many_headers)
        ),
        relay.send(_mail(STORE, alias, "A good one meanwhile"), sender=STORE, to=alias),
    )
    no_from_r, eight_bit_r, bad_mime_r, many_r, good_r = results
    assert no_from_r[0] == 250  # best effort: a From is synthesised from the route
    assert eight_bit_r[0] == 250
    assert bad_mime_r[0] == 250
    assert many_r[0] == 554 and "5.6.0" in many_r[1]
    assert good_r[0] == 250
    subjects = {m["headers"].get("Subject") for m in capture.messages()}
    assert {"no from", "bad mime", "A good one meanwhile"} <= subjects
    [no_from_mail] = [m for m in capture.messages() if m["headers"].get("Subject") == "no from"]
    # Without a From nothing authenticates the store's address: it goes out as unverified.
    assert "External sender (shop.example.com)" in no_from_mail["headers"]["From"]
    assert relay.order.store_alias not in no_from_mail["headers"]["From"]


async def test_starttls_is_offered_when_a_certificate_is_configured(
    topics: Settings, with_capture: Settings, relay: Relay, tmp_path: Any
) -> None:
    cert, key = _self_signed(tmp_path)
    tls = relay.settings.model_copy(
        update={"relay_port": 0, "relay_tls_cert": cert, "relay_tls_key": key}
    )
    service = RelayService(tls, CODEC, AddressCipher(tls.data_keys()))
    async with running(service):
        assert service.port is not None
        client = aiosmtplib.SMTP(
            hostname="127.0.0.1", port=service.port, start_tls=False, validate_certs=False
        )
        await client.connect()
        await client.ehlo()
        assert client.supports_extension("starttls")
        await client.starttls()
        message = _mail(STORE, relay.order.customer_alias, "Over TLS")
        await client.send_message(message, sender=STORE, recipients=[relay.order.customer_alias])
        await client.quit()


def _self_signed(directory: Any) -> tuple[Any, Any]:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ct.example.com")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = directory / "relay.crt", directory / "relay.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_the_relay_logs_one_line_per_message_and_never_a_real_address(
    relay: Relay, capture: Capture, json_logs: Callable[[], str]
) -> None:
    import json

    message = _mail(f"Carrier <{CARRIER}>", relay.order.customer_alias, "Logged")
    assert (await relay.send(message, sender=CARRIER, to=relay.order.customer_alias))[0] == 250
    code, _ = await relay.send(
        _mail(STRANGER, "x@gmail.example", "no"), sender=STRANGER, to="x@gmail.example"
    )
    assert code == 550
    err = json_logs()
    for address in (CUSTOMER, STORE, CARRIER, STRANGER, "x@gmail.example"):
        assert address not in err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    relayed = [line for line in lines if line["event"] == "message_relayed"]
    assert len(relayed) == 1
    assert (
        relayed[0]["order_id"] == relay.order.id
        and "event_id" in relayed[0]
        and "duration_ms" in relayed[0]
    )


async def test_a_known_orders_forward_is_one_database_write_and_no_read(
    relay: Relay, capture: Capture
) -> None:
    order = relay.order
    first = _mail(STORE, order.customer_alias, "Your order 0")
    assert (await relay.send(first, sender=STORE, to=order.customer_alias))[0] == 250
    before = dict(relay.commands.sent)
    for k in range(1, 11):
        mail = _mail(STORE, order.customer_alias, f"Your order {k}")
        assert (await relay.send(mail, sender=STORE, to=order.customer_alias))[0] == 250
    assert len(capture.messages()) == 11
    after = {k: n - before.get(k, 0) for k, n in relay.commands.sent.items()}
    sent = {k: n for k, n in after.items() if n}
    # Each forward is kept once (its body and what a bounce needs); the order, its aliases and
    # its store's settings were read for the first message and are remembered.
    assert sent == {("insert", "messages"): 10}, sent
