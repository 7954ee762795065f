"""The relay attacked from outside (issue 19), against the real relay, dnsmasq, Kafka and FerretDB.

A hard alias keeps the customer's real address from whoever holds the alias. These tests are the
attacker: one who guesses the customer's real address and watches the replies, one who sends our
own forwards back, one who floods refusals. For a right and a wrong guess, every reply, whether
and how the message is forwarded, and the time class of the answer must be the same.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from email import message_from_bytes
from email.policy import default as default_policy
from typing import Any

import pytest

from tests.conftest import Capture
from tests.helpers import CODEC, read_topic
from tests.integration.test_relay import FORGER, STORE, Relay, _mail
from tests.integration.test_relay import relay as relay  # noqa: PLC0414 - the fixture, shared
from tests.integration.test_relay import sender_dns as sender_dns  # noqa: PLC0414
from tests.integration.test_relay_auth import _relay_with
from tests.support.dns import LoopbackDns
from tests.support.senders import SenderDomain, publish_all
from tests.support.timelines import subjects_of
from worker.adapters import mongo
from worker.adapters.alias_store import AliasStore
from worker.adapters.dialect import detect_dialect
from worker.contracts.events import TimelineEvent, TimelineKind
from worker.core.crypto import AddressCipher
from worker.domain.aliases import Party, SystemClock
from worker.domain.replies import LOOP_DETECTED, NOT_AUTHENTICATED, RATE_LIMITED

pytestmark = pytest.mark.stack
POLICIES = {
    "reject": "v=DMARC1; p=reject",
    "quarantine": "v=DMARC1; p=quarantine",
    "none": "v=DMARC1; p=none",
    "absent": None,
}
# Where the attacker writes: the customer's alias, the store's, a carrier's reverse alias.
TARGETS = ("customer", "store", "reverse")


def _secs(attempt: Attempt) -> float:
    return attempt.seconds


def _subject() -> str:
    return f"Attempt {uuid.uuid4().hex[:12]}"


@dataclass
class Attempt:
    reply: tuple[int, str]
    forwarded: bool
    shown_as: str  # the forward's From display name, "" when nothing was forwarded
    seconds: float


@dataclass
class Order:
    customer_real: str
    aliases: dict[str, str]  # target -> alias


async def _order(relay: Relay, db: mongo.Database, unique: Any, customer_domain: str) -> Order:
    store = AliasStore(
        db, AddressCipher(relay.settings.data_keys()), domain=relay.settings.domain,
        ttl_days=60, clock=SystemClock(), dialect=await detect_dialect(db),
    )  # fmt: skip
    real = f"jane.roe@{customer_domain}"
    order_id = unique("o-guess")
    customer, shop = await store.order_pair(
        order_id, "store-1", Party(real, "Jane Roe"), Party(STORE, "Shop Example")
    )
    carrier = await store.reverse_alias(order_id, Party("track@carrier.example.net", "Carrier"))
    return Order(
        real, {"customer": customer.address, "store": shop.address, "reverse": carrier.address}
    )


async def _attempt(relay: Relay, capture: Capture, guess: str, to: str, subject: str) -> Attempt:
    """The forger (127.0.0.3) claims `guess` in MAIL FROM and From, writing to `to`."""
    message = _mail(f"Jane Roe <{guess}>", to, subject)
    started = time.perf_counter()
    reply = await relay.send(message, sender=guess, to=to, source=FORGER)
    seconds = time.perf_counter() - started
    found = [m for m in capture.messages() if m["headers"].get("Subject") == subject]
    shown = ""
    if found:
        forwarded = message_from_bytes(capture.raw(found[0]), policy=default_policy)
        shown = str(forwarded["From"].addresses[0].display_name)
    return Attempt(reply, bool(found), shown, seconds)


@pytest.mark.parametrize("policy", list(POLICIES))
async def test_no_oracle_a_right_and_a_wrong_guess_get_the_same_replies_forwards_and_times(
    relay: Relay, capture: Capture, db: mongo.Database, unique: Any, dns_server: LoopbackDns,
    *, policy: str,
) -> None:  # fmt: skip
    domain = SenderDomain(f"{unique('guess')}.example", "127.0.0.1", POLICIES[policy])
    publish_all(dns_server, domain)
    order = await _order(relay, db, unique, domain.name)
    wrong = f"john.doe@{domain.name}"
    rows = []
    for target in TARGETS:
        to = order.aliases[target]
        # Three each, interleaved; the first attempt warms caches for both. The machine is
        # shared, so the time class is compared on each side's fastest answer.
        right, guess = [], []
        for _ in range(3):
            right.append(await _attempt(relay, capture, order.customer_real, to, _subject()))
            guess.append(await _attempt(relay, capture, wrong, to, _subject()))
        for a, b in zip(right, guess, strict=True):
            assert a.reply == b.reply, (target, a, b)
            assert (a.forwarded, a.shown_as) == (b.forwarded, b.shown_as), (target, a, b)
            assert "Jane" not in a.shown_as and "Shop" not in a.shown_as
        # The same time class: no DNS or database step done for one and not the other.
        fastest_right = min(a.seconds for a in right[1:])
        fastest_wrong = min(b.seconds for b in guess[1:])
        assert abs(fastest_right - fastest_wrong) < 0.15, (right, guess)
        rows.append((target, min(right[1:], key=_secs), min(guess[1:], key=_secs)))
    print(f"\nDMARC {policy}: right guess | wrong guess")
    for target, a, b in rows:
        print(
            f"  to {target:8} {a.reply[0]} {a.reply[1][:60]!r} fwd={a.forwarded} "
            f"{a.shown_as!r} {a.seconds * 1000:.0f} ms | {b.reply[0]} fwd={b.forwarded} "
            f"{b.shown_as!r} {b.seconds * 1000:.0f} ms"
        )
    expected = (550, NOT_AUTHENTICATED[4:])
    assert rows[2][1].reply == expected  # nobody but the authenticated customer at a reverse alias
    if policy in ("reject", "quarantine"):
        assert all(row[1].reply == expected and not row[1].forwarded for row in rows)
    else:
        assert [row[1].forwarded for row in rows] == [True, True, False]
        assert rows[0][1].shown_as == f"External sender ({domain.name})"


async def test_rcpt_to_a_reverse_alias_answers_the_same_whatever_the_envelope(
    relay: Relay, db: mongo.Database, unique: Any
) -> None:
    import aiosmtplib

    order = await _order(relay, db, unique, "example.org")
    replies = []
    for sender in (order.customer_real, "john.doe@example.org"):
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.port, start_tls=False)
        await client.connect(source_address=(FORGER, 0))
        try:
            await client.ehlo()
            await client.mail(sender)
            answer = await client.rcpt(order.aliases["reverse"])
            replies.append((answer.code, answer.message))
        finally:
            await client.quit()
    assert replies[0] == replies[1] == (250, "2.1.5 Recipient OK")


async def test_refusals_count_against_the_alias_limit_so_guessing_is_slow(
    relay: Relay, capture: Capture, db: mongo.Database, unique: Any
) -> None:
    async with _relay_with(relay, relay_rate_per_alias=3) as limited:
        order = await _order(limited, db, unique, "example.org")
        to = order.aliases["reverse"]
        candidates = [f"candidate{i}@example.org" for i in range(5)] + [order.customer_real]
        replies = [
            (await _attempt(limited, capture, guess, to, _subject())).reply[0]
            for guess in candidates
        ]
    # Three refusals, then 451 for every further guess, the right one included.
    assert replies == [550, 550, 550, 451, 451, 451]
    events = [
        CODEC.decode(r.value, TimelineEvent)
        for r in await read_topic(relay.settings, relay.settings.topic_timeline, want=4)
    ]
    reasons = [e.message.reason or "" for e in events if e.message]
    assert [r.split(";")[0].split(" (")[0] for r in reasons] == [
        "sender-not-authenticated", "sender-not-authenticated", "sender-not-authenticated",
        "rate-limited",
    ]  # fmt: skip
    assert RATE_LIMITED.startswith("451 4.7.1")


def _replayed_variants(forward: bytes, other_alias: str, own_alias: str) -> dict[str, bytes]:
    head, _, body = forward.partition(b"\r\n\r\n")
    to_other = re.sub(rb"(?m)^To: .*$", b"To: " + other_alias.encode(), head)
    return {
        "as sent": forward,
        "to another alias": to_other + b"\r\n\r\n" + body,
        "a header added": b"X-Extra: 1\r\n" + forward,
        "signature removed": re.sub(rb"(?ms)^DKIM-Signature:.*?(?=^\S)", b"", head)
        + b"\r\n\r\n"
        + body,
        "From re-encoded": re.sub(
            rb"(?m)^From: .*$", b"From: =?utf-8?q?Shop?= <" + own_alias.encode() + b">", head
        )
        + b"\r\n\r\n"
        + body,
        "body changed": head + b"\r\n\r\nPay here: https://evil.example/\r\n",
    }


async def test_our_own_forward_sent_back_is_refused_in_every_variant_and_recorded(
    relay: Relay, capture: Capture, db: mongo.Database, unique: Any
) -> None:
    """Our signature is no credential: whatever was changed, a forward of ours is a replay."""
    from tests.integration.test_relay import SHOP

    async with _relay_with(
        relay, relay_rate_per_alias=0, relay_rate_per_ip=0, relay_rate_per_domain=0
    ) as unlimited:
        await _replays_refused(unlimited, capture, db, unique, SHOP)
    events = [
        CODEC.decode(r.value, TimelineEvent)
        for r in await read_topic(relay.settings, relay.settings.topic_timeline, want=3)
    ]
    rejected = [e for e in events if e.kind is TimelineKind.MESSAGE_REJECTED]
    assert rejected
    assert all((e.message.reason or "").startswith("loop-or-replay") for e in rejected if e.message)


async def _replays_refused(
    relay: Relay, capture: Capture, db: mongo.Database, unique: Any, shop: SenderDomain
) -> None:
    order = await _order(relay, db, unique, "example.org")
    store_mail = shop.sign(_mail(STORE, order.aliases["customer"], "Original").as_bytes())
    assert (await relay.send(store_mail, sender=STORE, to=order.aliases["customer"]))[0] == 250
    [entry] = [m for m in capture.messages() if m["headers"].get("Subject") == "Original"]
    forward = capture.raw(entry)
    other = await _order(relay, db, unique, "example.org")
    variants = _replayed_variants(forward, other.aliases["store"], order.aliases["store"])
    for name, raw in variants.items():
        for to in (order.aliases["store"], order.aliases["customer"], other.aliases["customer"]):
            code, text = await relay.send(raw, sender=STORE, to=to, source=FORGER)
            assert (code, text) == (550, LOOP_DETECTED[4:]), name
            code, text = await relay.send(raw, sender=entry["mailFrom"], to=to)
            assert code == 550, name
    assert [m["headers"].get("Subject") for m in capture.messages()] == ["Original"]


INJECTIONS = {
    "subject hides CRLF and a Bcc": b"Subject: =?utf-8?q?Hi=0D=0ABcc:_victim@elsewhere.example?=",
    "subject hides a blank line": b"Subject: =?utf-8?b?SGkNCg0KQm9keQ==?=",
    "sender name hides CRLF": (
        b"From: =?utf-8?q?Shop=0D=0ASender:_x@y.example?= <orders@shop.example.com>"
    ),
    "unknown charset": b"Subject: =?x-no-such-charset?q?hello?=",
    "broken base64": b"Subject: =?utf-8?b?!!!?=",
    "NUL and ESC raw": b"Subject: a\x00b\x1b[31mc",
    "Bcc in capitals, space before colon": b"BCC : victim@elsewhere.example",
    "lone CR": b"Subject: one\rBcc: victim@elsewhere.example",
}


@pytest.mark.parametrize("header", list(INJECTIONS.values()), ids=list(INJECTIONS))
async def test_header_injection_never_adds_a_field_nor_gets_451(
    relay: Relay, capture: Capture, header: bytes
) -> None:
    to = relay.order.customer_alias
    marker = uuid.uuid4().hex
    head = [b"To: " + to.encode(), b"Message-ID: <" + marker.encode() + b"@shop.example.com>"]
    if not header.startswith(b"From:"):
        head.insert(0, b"From: Shop <" + STORE.encode() + b">")
    raw = b"\r\n".join([*head, header]) + b"\r\n\r\nbody " + marker.encode() + b"\r\n"
    # Unsigned: the store's SPF pass (127.0.0.1) authenticates it, and dkimpy would refuse to
    # sign some of these headers.
    code, text = await relay.send(raw, sender=STORE, to=to)
    assert code in (250, 550), (code, text)  # never a 451 the sender would retry forever
    if code == 550:
        assert text.startswith("5.6.0")
        return
    [entry] = [m for m in capture.messages() if marker.encode() in capture.raw(m)]
    forwarded = message_from_bytes(capture.raw(entry), policy=default_policy)
    for stripped in ("Bcc", "Sender"):
        assert forwarded.get_all(stripped) is None
    assert len(forwarded.get_all("Subject") or []) <= 1
    head_bytes = capture.raw(entry).split(b"\r\n\r\n", 1)[0]
    # Whatever text was hidden stays text inside its own field: no line starts a new field.
    fields = [line.split(b":", 1)[0].strip().lower() for line in head_bytes.split(b"\r\n")]
    assert b"bcc" not in fields and b"sender" not in fields
    assert not any(b < 0x20 and b not in (0x09, 0x0A, 0x0D) for b in head_bytes)
    assert forwarded.get_body(("plain",)) is not None


async def test_a_reused_message_id_is_kept_and_shown_twice_and_a_redelivery_once(
    relay: Relay, capture: Capture, db: mongo.Database
) -> None:
    to = relay.order.customer_alias
    reused = f"<{uuid.uuid4().hex}@shop.example.com>"
    first = _mail(STORE, to, "First", "the first text", Message_ID=reused)
    second = _mail(STORE, to, "Second", "another text", Message_ID=reused)
    for message in (first, second, first):  # the third is a redelivery of the first
        assert (await relay.send(message, sender=STORE, to=to))[0] == 250
    events = await subjects_of(relay.settings, db).open([  # sealed per customer on the wire
        CODEC.decode(r.value, TimelineEvent)
        for r in await read_topic(relay.settings, relay.settings.topic_timeline, want=3)
    ])  # fmt: skip
    forwards = [e for e in events if e.kind is TimelineKind.MESSAGE_FORWARDED]
    assert len(forwards) == 3
    assert len({e.event_id for e in forwards}) == 2  # the redelivery is the same entry
    assert {e.message.subject for e in forwards if e.message} == {"First", "Second"}


async def test_a_real_address_in_a_body_reaches_nobody(
    relay: Relay, capture: Capture, db: mongo.Database
) -> None:
    from tests.integration.test_relay import CUSTOMER as CUSTOMER_REAL

    to = relay.order.store_alias
    body = f"Hi, I am {CUSTOMER_REAL}.\n\n> On Monday <{CUSTOMER_REAL}> wrote:\n> hello"
    message = _mail(CUSTOMER_REAL, to, "About my order", body)
    message.add_alternative(
        f"<p>Mail me: <a href='mailto:{CUSTOMER_REAL}'>me</a></p>", subtype="html"
    )
    assert (await relay.send(message, sender=CUSTOMER_REAL, to=to))[0] == 250
    [entry] = [m for m in capture.messages() if m["headers"].get("Subject") == "About my order"]
    assert CUSTOMER_REAL.encode() not in capture.raw(entry).lower()
    [event] = await subjects_of(relay.settings, db).open([  # sealed per customer on the wire
        CODEC.decode(r.value, TimelineEvent)
        for r in await read_topic(relay.settings, relay.settings.topic_timeline, want=1)
    ])  # fmt: skip
    assert event.message is not None and CUSTOMER_REAL not in event.message.first_words
    assert relay.order.customer_alias in event.message.first_words
