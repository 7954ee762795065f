"""The relay on the open internet, end to end: real sockets, DNS, Kafka and FerretDB.

Senders bind distinct loopback addresses: the participants' domains authorise 127.0.0.1 and
127.0.0.2 in SPF, so mail from 127.0.0.3 is a forgery (`tests/integration/test_relay.py` has the
records). Every refusal code of issue 11 is shown here, with the timeline entry it leaves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import aiosmtplib
import pytest

from tests.conftest import Capture
from tests.helpers import CODEC, read_topic, running
from tests.integration.test_relay import (
    CARRIER,
    CUSTOMER,
    FORGER,
    SHOP,
    STORE,
    STRANGER,
    Relay,
    _forwarded,
    _mail,
)
from tests.integration.test_relay import relay as relay  # noqa: PLC0414 - the fixture, shared
from tests.integration.test_relay import sender_dns as sender_dns  # noqa: PLC0414
from tests.support.clock import MovableClock
from tests.support.dns import LoopbackDns
from tests.support.kafka import topic_size
from tests.support.net import free_port
from tests.support.senders import SenderDomain, publish_all
from worker.adapters import mongo
from worker.adapters.alias_store import AliasStore
from worker.adapters.dialect import detect_dialect
from worker.apps.relay import RelayService
from worker.contracts.events import TimelineEvent, TimelineKind
from worker.core.crypto import AddressCipher
from worker.domain.aliases import Party, SystemClock
from worker.domain.replies import NOT_AUTHENTICATED

pytestmark = pytest.mark.stack


async def _timeline(relay: Relay, want: int) -> list[TimelineEvent]:
    records = await read_topic(relay.settings, relay.settings.topic_timeline, want=want)
    return [CODEC.decode(r.value, TimelineEvent) for r in records]


def _no_real_address(event: TimelineEvent) -> None:
    text = event.model_dump_json()
    for address in (CUSTOMER, STORE, CARRIER, STRANGER):
        assert address not in text


@asynccontextmanager
async def _relay_with(relay: Relay, **settings: Any) -> AsyncIterator[Relay]:
    """Another relay process on the same order, database and topics, with other settings."""
    changed = relay.settings.model_copy(update={"relay_port": 0, **settings})
    service = RelayService(changed, CODEC, AddressCipher(changed.data_keys()))
    async with running(service):
        assert service.port is not None
        yield Relay(service.port, changed, relay.order, relay.commands)


async def _reverse_alias_of_the_carrier(relay: Relay, capture: Capture) -> str:
    notice = _mail(f"Carrier <{CARRIER}>", relay.order.customer_alias, "Parcel on its way")
    assert (await relay.send(notice, sender=CARRIER, to=relay.order.customer_alias))[0] == 250
    _, forwarded = _forwarded(capture, "Parcel on its way")
    return str(forwarded["From"].addresses[0].addr_spec)


async def test_authenticated_participants_reach_each_other_with_one_true_authentication_header(
    relay: Relay, capture: Capture
) -> None:
    order = relay.order
    forged_claims = {
        "Authentication-Results": "ct.example.com; spf=pass; dkim=pass; dmarc=pass",
    }
    raw = SHOP.sign(_mail(STORE, order.customer_alias, "Signed", **forged_claims).as_bytes())
    assert (await relay.send(raw, sender=STORE, to=order.customer_alias))[0] == 250
    entry, message = _forwarded(capture, "Signed")
    assert entry["rcptTos"] == [CUSTOMER]
    assert message["From"].addresses[0].addr_spec == order.store_alias
    [header] = message.get_all("Authentication-Results") or []
    assert str(header) == (
        "ct.example.com; spf=pass smtp.mailfrom=shop.example.com;"
        " dkim=pass header.d=shop.example.com header.s=s1;"
        " dmarc=pass (p=none) header.from=shop.example.com"
    )
    reverse = await _reverse_alias_of_the_carrier(relay, capture)
    answer = _mail(CUSTOMER, reverse, "Re: Parcel on its way")
    assert (await relay.send(answer, sender=CUSTOMER, to=reverse))[0] == 250
    entry, message = _forwarded(capture, "Re: Parcel on its way")
    assert entry["rcptTos"] == [CARRIER]
    assert message["From"].addresses[0].addr_spec == order.customer_alias
    # example.org publishes no DMARC record: the aligned SPF pass is what authenticates.
    assert "spf=pass smtp.mailfrom=example.org" in str(message["Authentication-Results"])
    assert "dmarc=none" in str(message["Authentication-Results"])
    events = await _timeline(relay, 3)
    assert [e.kind for e in events] == [TimelineKind.MESSAGE_FORWARDED] * 3
    verdicts = [e.message.authentication for e in events if e.message]
    assert verdicts[0] == (
        "spf=pass(mailfrom=shop.example.com) dkim=pass(d=shop.example.com)"
        " dmarc=pass(p=none)(from=shop.example.com)"
    )
    assert all(v and v.startswith("spf=pass") for v in verdicts)


async def test_a_forged_customer_writing_to_a_reverse_alias_gets_550_and_a_timeline_entry(
    relay: Relay, capture: Capture
) -> None:
    reverse = await _reverse_alias_of_the_carrier(relay, capture)
    forged = _mail(CUSTOMER, reverse, "Please pay the customs fee")
    code, text = await relay.send(forged, sender=CUSTOMER, to=reverse, source=FORGER)
    assert (code, text[:5]) == (550, "5.7.1") and text == NOT_AUTHENTICATED[4:]
    assert not [m for m in capture.messages() if m["headers"].get("Subject") == forged["Subject"]]
    _, rejected = await _timeline(relay, 2)
    assert rejected.kind is TimelineKind.MESSAGE_REJECTED and rejected.message is not None
    assert rejected.message.reason is not None
    assert rejected.message.reason.startswith("sender-not-authenticated; spf=fail")
    # The entry never shows the forgery as the customer's.
    assert rejected.message.from_.alias == "" and rejected.message.to.alias == reverse
    _no_real_address(rejected)


async def test_a_forged_store_goes_to_the_customer_as_an_unverified_external_sender(
    relay: Relay, capture: Capture
) -> None:
    order = relay.order
    forged = _mail(f"Shop Example <{STORE}>", order.customer_alias, "Your refund link")
    assert (await relay.send(forged, sender=STORE, to=order.customer_alias, source=FORGER))[
        0
    ] == 250
    _, message = _forwarded(capture, "Your refund link")
    shown = message["From"].addresses[0]
    # The store's name is reserved for the store's authenticated mail (issue 19).
    assert shown.addr_spec != order.store_alias
    assert shown.display_name == "External sender (shop.example.com)"
    assert "dmarc=fail (p=none) header.from=shop.example.com" in str(
        message["Authentication-Results"]
    )
    [event] = await _timeline(relay, 1)
    assert event.message is not None and event.message.from_.alias == shown.addr_spec
    assert event.message.authentication is not None
    assert event.message.authentication.startswith("sender-not-authenticated; spf=fail")
    _no_real_address(event)


async def test_a_p_reject_failure_is_refused_with_550_for_any_sender(
    relay: Relay, capture: Capture
) -> None:
    order = relay.order
    spoof = _mail(f"Carrier <{CARRIER}>", order.customer_alias, "Missed delivery")
    code, text = await relay.send(spoof, sender=CARRIER, to=order.customer_alias, source=FORGER)
    assert (code, text[:5]) == (550, "5.7.1") and text == NOT_AUTHENTICATED[4:]
    assert capture.messages() == []
    [event] = await _timeline(relay, 1)
    assert event.kind is TimelineKind.MESSAGE_REJECTED and event.message is not None
    assert (event.message.reason or "").startswith("dmarc-policy-reject; spf=fail")
    _no_real_address(event)


async def test_a_forged_customer_to_the_store_without_dmarc_goes_as_unverified(
    relay: Relay, capture: Capture
) -> None:
    order = relay.order
    genuine = _mail(CUSTOMER, order.store_alias, "Where is my order?")
    assert (await relay.send(genuine, sender=CUSTOMER, to=order.store_alias, source="127.0.0.2"))[
        0
    ] == 250
    assert _forwarded(capture, "Where is my order?")[1]["From"].addresses[0].addr_spec == (
        order.customer_alias
    )
    forged = _mail(CUSTOMER, order.store_alias, "Cancel my order")
    assert (await relay.send(forged, sender=CUSTOMER, to=order.store_alias, source=FORGER))[
        0
    ] == 250
    shown = _forwarded(capture, "Cancel my order")[1]["From"].addresses[0]
    assert shown.addr_spec != order.customer_alias
    assert shown.display_name == "External sender (example.org)"


async def test_dns_down_gives_451_4_4_3_and_nothing_is_forwarded_or_recorded(
    relay: Relay, capture: Capture
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    async with _relay_with(relay, dns_resolvers=dead, dns_timeout_s=1) as blind:
        message = _mail(STORE, blind.order.customer_alias, "During the outage")
        code, text = await blind.send(message, sender=STORE, to=blind.order.customer_alias)
    assert (code, text[:5]) == (451, "4.4.3")
    assert capture.messages() == []
    assert await read_topic(relay.settings, relay.settings.topic_timeline, want=0) == []


async def test_over_the_alias_rate_limit_451_4_7_1_and_one_entry_per_window(
    relay: Relay, capture: Capture
) -> None:
    async with _relay_with(relay, relay_rate_per_alias=2) as limited:
        alias = limited.order.customer_alias
        codes = []
        for i in range(5):
            message = _mail(STRANGER, alias, f"Offer {i}")
            code, text = await limited.send(message, sender=STRANGER, to=alias)
            codes.append((code, text[:5]))
        # The store is a participant: never counted.
        store_mail = _mail(STORE, alias, "From the store")
        store_code, _ = await limited.send(store_mail, sender=STORE, to=alias)
    assert codes == [(250, "2.0.0")] * 2 + [(451, "4.7.1")] * 3
    assert store_code == 250
    events = await _timeline(relay, 4)
    rejected = [e for e in events if e.kind is TimelineKind.MESSAGE_REJECTED]
    assert len(rejected) == 1 and rejected[0].message is not None
    assert (rejected[0].message.reason or "").startswith("rate-limited (per alias)")
    assert await topic_size(relay.settings, relay.settings.topic_timeline) == 4


async def test_marketing_from_an_external_sender_is_refused_and_recorded(
    relay: Relay, capture: Capture
) -> None:
    alias = relay.order.customer_alias
    newsletter = _mail(STRANGER, alias, "Big sale", List_Unsubscribe="<https://x.example/u>")
    code, text = await relay.send(newsletter, sender=STRANGER, to=alias)
    assert (code, text[:5]) == (550, "5.7.1") and "marketing" in text
    bulk = _mail(STRANGER, alias, "Bulk", Precedence="bulk")
    assert (await relay.send(bulk, sender=STRANGER, to=alias))[0] == 550
    # The authenticated store's mail with a List-Id is its own business with its customer.
    store = _mail(STORE, alias, "Order update", List_Id="Orders <orders.shop.example.com>")
    assert (await relay.send(store, sender=STORE, to=alias))[0] == 250
    events = await _timeline(relay, 3)
    reasons = [e.message.reason for e in events if e.message and e.kind.value == "MESSAGE_REJECTED"]
    assert len(reasons) == 2 and all((r or "").startswith("marketing-refused (") for r in reasons)


async def test_three_recipients_with_an_expired_one_each_get_a_true_answer(
    relay: Relay, capture: Capture, db: mongo.Database, unique: Any
) -> None:
    aliases = AliasStore(
        db, AddressCipher(relay.settings.data_keys()), domain=relay.settings.domain,
        ttl_days=60, clock=SystemClock(), dialect=await detect_dialect(db),
    )  # fmt: skip
    old, _ = await aliases.order_pair(
        unique("o-old"), "store-1", Party("old@example.org", "Old"), Party(STORE, "Shop")
    )
    await db["aliases"].update_one(
        {"_id": old.address}, {"$set": {"expiresAt": MovableClock().now() - timedelta(days=1)}}
    )
    order = relay.order
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.port, start_tls=False)
    await client.connect()
    try:
        await client.ehlo()
        await client.mail(CARRIER)
        first = await client.rcpt(order.customer_alias)
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as expired:
            await client.rcpt(old.address)
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as other_route:
            await client.rcpt(order.store_alias)
        notice = _mail(CARRIER, order.customer_alias, "Parcel for two").as_bytes()
        data = await client.data(notice)
        # The sender delivers the deferred recipient in a transaction of its own.
        await client.mail(CARRIER)
        again = await client.rcpt(order.store_alias)
        second = await client.data(_mail(CARRIER, order.store_alias, "Parcel for you").as_bytes())
    finally:
        await client.quit()
    assert first.code == 250 and again.code == 250
    assert (expired.value.code, expired.value.message[:5]) == (550, "5.1.1")
    assert (other_route.value.code, other_route.value.message[:5]) == (452, "4.5.3")
    assert data.code == 250 and second.code == 250
    # The 250 to DATA was true for its one recipient, and no one else got that message.
    entry, _ = _forwarded(capture, "Parcel for two")
    assert entry["rcptTos"] == [CUSTOMER]
    assert _forwarded(capture, "Parcel for you")[0]["rcptTos"] == [STORE]
    events = await _timeline(relay, 3)
    kinds = sorted(e.kind.value for e in events)
    assert kinds == ["MESSAGE_FORWARDED", "MESSAGE_FORWARDED", "MESSAGE_REJECTED"]


async def test_authentication_off_trusts_the_headers_and_says_so_loudly_at_start(
    relay: Relay, capture: Capture, json_logs: Callable[[], str]
) -> None:
    import json

    async with _relay_with(relay, relay_sender_auth="off") as trusting:
        alias = trusting.order.customer_alias
        forged = _mail(STORE, alias, "Trusted blindly")
        assert (await trusting.send(forged, sender=STORE, to=alias, source=FORGER))[0] == 250
    lines = [json.loads(line) for line in json_logs().splitlines() if line[:1] == "{"]
    [warning] = [line for line in lines if line["event"] == "sender_authentication_off"]
    assert warning["level"] == "warning" and "CT_RELAY_SENDER_AUTH=off" in warning["detail"]
    _, message = _forwarded(capture, "Trusted blindly")
    assert message["From"].addresses[0].addr_spec == relay.order.store_alias
    assert message["Authentication-Results"] is None
    [event] = await _timeline(relay, 1)
    assert event.message is not None
    assert event.message.authentication == "sender-authentication-off"


async def test_a_forged_store_whose_domain_quarantines_gets_550_and_a_timeline_entry(
    relay: Relay, capture: Capture, db: mongo.Database, unique: Any, dns_server: LoopbackDns
) -> None:
    shop = SenderDomain(f"{unique('qshop')}.example", "127.0.0.1", "v=DMARC1; p=quarantine")
    publish_all(dns_server, shop)
    aliases = AliasStore(
        db, AddressCipher(relay.settings.data_keys()), domain=relay.settings.domain,
        ttl_days=60, clock=SystemClock(), dialect=await detect_dialect(db),
    )  # fmt: skip
    store = f"orders@{shop.name}"
    customer_alias, _ = await aliases.order_pair(
        unique("o-q"), "store-q", Party("buyer@example.org", "Buyer"), Party(store, "Q Shop")
    )
    forged = _mail(f"Q Shop <{store}>", customer_alias.address, "Confirm your card")
    code, text = await relay.send(forged, sender=store, to=customer_alias.address, source=FORGER)
    assert (code, text[:5]) == (550, "5.7.1") and text == NOT_AUTHENTICATED[4:]
    assert capture.messages() == []
    [event] = await _timeline(relay, 1)
    assert event.kind is TimelineKind.MESSAGE_REJECTED and event.message is not None
    assert (event.message.reason or "").startswith("dmarc-policy-quarantine; spf=fail")
    assert event.message.from_.alias == "" and store not in event.model_dump_json()
