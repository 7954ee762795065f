"""Erasure of a soft-masked store's customer, whose alias is their address in readable form.

`ana.x@p-x.example.org-<token>.ct.example.com` names the person as plainly as their address, so
on a soft-masked order the customer alias is personal data: sealed under the subject key in every
timeline event (Kafka, MongoDB, what a bounce needs), erased with the key, and its alias document
moved to the alias's keyed hash at erasure. The store's soft alias masks the store's address
(business data) and stays. Here: a notification, the store writing and the customer replying
through the relay, a bounce; then erasure, after which a scan of every MongoDB collection, our
topics and a replay of the timeline topic finds neither the address, nor its local part or its
domain as the alias spells them, nor the alias; mail to the old alias is refused `550 5.1.1` and
recorded as erased; the console and `ct timeline` show `erased`.
"""

from __future__ import annotations

import json
import uuid
from email.message import EmailMessage
from email.utils import parseaddr
from typing import Any

import httpx
import pytest

from tests.conftest import Capture
from tests.helpers import CODEC, running
from tests.integration.test_subjects import Person, _bounce, _console, _ct, _emit, _has
from tests.support.dns import LoopbackDns
from tests.support.polling import eventually
from tests.support.relay_client import rcpt_code
from tests.support.scans import flatten, scan_everything, scan_mongo, scan_topic
from tests.support.senders import SenderDomain, publish_all
from tests.support.timelines import opened_timeline
from tests.web.conftest import free_web_port
from worker.adapters import mongo
from worker.adapters.dialect import detect_dialect
from worker.adapters.stores import StoreSettings
from worker.apps.notifier import NotifierService
from worker.apps.projector import ProjectorService
from worker.apps.relay import RelayService
from worker.apps.web import WebService, build_accounts
from worker.contracts.events import OrderStatus, ParticipantRole, TimelineKind
from worker.core.config import Settings
from worker.core.crypto import AddressCipher, is_sealed
from worker.domain.accounts import Role
from worker.domain.aliases import MaskType, SystemClock, erased_alias_id
from worker.domain.personal import ERASED
from worker.services.accounts import platform_operator
from worker.services.timeline import get_timeline

pytestmark = [pytest.mark.stack, pytest.mark.slow]
MAIL_SERVER = "127.0.0.1"  # the SPF records below authorise it for both parties' domains


class SoftPerson(Person):
    """A person whose mail domain is theirs alone, so the test can publish its SPF record."""

    def __init__(self) -> None:
        super().__init__()
        run = self.orders[0].rsplit("-", 1)[1]
        self.local, self.domain = f"ana.{run}", f"p{run}.example.org"
        self.email = f"{self.local}@{self.domain}"
        self.store_email = f"orders@shop{run}.example.com"

    def soft_traces(self, alias: str) -> dict[str, bytes]:
        """What names the person inside their soft alias: the alias, the address, the local
        part, and the domain with the token as the alias spells it."""
        spelled = alias.split("@", 1)[1].split(".ct.", 1)[0]  # p<run>.example.org-<token>
        assert spelled.startswith(self.domain + "-"), alias
        return self.traces() | {
            "soft alias": alias.encode(), "local part": f"{self.local}@".encode(),
            "domain as the alias spells it": spelled.encode(),
        }  # fmt: skip


def _mail(sender: str, to: str, subject: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, to, subject
    message.set_content(body)
    return message


async def test_a_soft_masked_customers_erasure_leaves_no_alias_that_spells_their_address(
    topics: Settings,
    with_capture: Settings,
    capture: Capture,
    db: mongo.Database,
    dns_server: LoopbackDns,
) -> None:
    person = SoftPerson()
    publish_all(
        dns_server,
        SenderDomain(person.domain, MAIL_SERVER),
        SenderDomain(person.store_email.split("@")[1], MAIL_SERVER),
    )
    dialect = await detect_dialect(db)
    settings = with_capture.model_copy(update={"relay_port": 0, "alias_cache_size": 0})
    cipher = AddressCipher(settings.data_keys())
    (order, _), (store, _) = person.orders, person.stores
    await StoreSettings(db).set_mask(store, MaskType.SOFT)
    relay = RelayService(settings, CODEC, cipher)
    async with running(
        NotifierService(settings, CODEC, cipher), relay, ProjectorService(settings, CODEC)
    ):
        assert relay.port is not None
        await _emit(
            settings,
            person.event(
                order, store, OrderStatus.PAYMENT_APPROVED, store_email=person.store_email
            ),
        )
        [paid] = await eventually(capture.messages, what="the notification")
        customer_alias = parseaddr(paid["headers"]["To"])[1]
        store_alias = parseaddr(paid["headers"]["From"])[1]
        assert customer_alias.startswith(person.email + "-"), customer_alias  # soft, readable
        assert store_alias.startswith(person.store_email + "-"), store_alias

        # Both ways through the relay: the store writes to the customer, the customer replies.
        to_customer = _mail(person.store_email, customer_alias, person.subject, person.body)
        assert await rcpt_code(to_customer, relay.port, person.store_email, customer_alias) == 250
        reply = _mail(person.email, store_alias, f"Re: {person.subject}", person.body)
        assert await rcpt_code(reply, relay.port, person.email, store_alias) == 250
        # The store's mailbox sees the customer as their soft alias, never their address.
        [replied] = await eventually(
            lambda: [m for m in capture.messages() if m["rcptTos"] == [person.store_email]],
            what="the reply",
        )
        assert parseaddr(replied["headers"]["From"])[1] == customer_alias
        await _bounce(relay.port, capture.raw(paid), person, paid["mailFrom"])
        await eventually(
            lambda: _count(settings, db, order, TimelineKind.MESSAGE_FORWARDED, 2), what="both"
        )
        await eventually(
            lambda: _has(settings, db, order, TimelineKind.DELIVERY_FAILED), what="the bounce"
        )

        # While the person is a subject, readers open their alias; what is stored seals it.
        opened = await opened_timeline(settings, db, order) or []
        shown = {p.alias for e in opened if e.message for p in (e.message.from_, e.message.to)}
        assert {customer_alias, store_alias} <= shown
        stored = await get_timeline(db, order) or []
        customers = [
            p.alias for e in stored if e.message
            for p in (e.message.from_, e.message.to) if p.role is ParticipantRole.CUSTOMER
        ]  # fmt: skip
        assert len(customers) >= 4 and all(is_sealed(a) for a in customers)
        # An operator's lookup is audited; the audit chain is never rewritten, so it names a
        # soft alias by its keyed hash from the start.
        resolved = await _ct(settings, "alias", "resolve", customer_alias, "--reason", "t-1")
        assert order in resolved.stdout and "mask: soft" in resolved.stdout
        [looked_up] = [a async for a in db["audit"].find({"action": "alias.resolve"})]
        assert looked_up["alias"] == f"hash:{cipher.address_hash(customer_alias)}"
        traces = person.soft_traces(customer_alias)
        before = await scan_mongo(db, traces)
        # Only the alias store knows the alias before erasure; no name, subject or text anywhere.
        assert {k: v for k, v in before.items() if v} == {
            "alias_keys": ["address", "domain as the alias spells it", "local part", "soft alias"],
            "aliases": ["address", "domain as the alias spells it", "local part", "soft alias"],
        }, before
        before_api = await _api_conversation(settings, db, order)
        soft_shown = {
            (p["emailAlias"], p["aliasMaskType"]) for m in before_api["messages"]
            for p in [m["from"], *m["to"]] if p["role"] == "CUSTOMER"
        }  # fmt: skip
        assert soft_shown == {(customer_alias, "soft")}, soft_shown
        exported = await _ct(settings, "subject", "export", "--email", person.email,
                             "--reason", "LGPD art. 18 request #3")  # fmt: skip
        document = json.loads(exported.stdout)
        assert customer_alias in {a["alias"] for a in document["aliases"]}
        assert [s["orderId"] for s in document["suppressions"]] == [order]  # the bounce counted

        erased = await _ct(settings, "subject", "erase", "--email", person.email,
                           "--reason", "GDPR art. 17 request #4")  # fmt: skip
        assert "erased 1 key(s), 1 alias(es) of 1 order(s)" in erased.stdout
        again = await _ct(settings, "subject", "erase", "--email", person.email,
                          "--reason", "GDPR art. 17 request #4")  # fmt: skip
        assert "already erased" in again.stdout

        # The old alias is still known as erased (by its keyed hash): 550 5.1.1, recorded.
        mail = _mail(person.store_email, customer_alias, "Still there?", "Anyone?")
        assert await rcpt_code(mail, relay.port, person.store_email, customer_alias) == 550
        await eventually(
            lambda: _has(settings, db, order, TimelineKind.MESSAGE_REJECTED), what="the refusal"
        )
        tombstone = erased_alias_id(cipher.address_hash(customer_alias))
        kept = await db["aliases"].find_one({"_id": tombstone})
        assert kept is not None and kept["erasedAt"] is not None and kept["role"] == "CUSTOMER"
        # The store's soft alias masks the store's address (business data): it stays.
        assert await db["aliases"].find_one({"_id": store_alias}) is not None

    shown_cli = await _ct(settings, "timeline", order)
    assert ERASED in shown_cli.stdout
    assert not [what for what, t in traces.items() if t.decode() in shown_cli.stdout]
    page = await _console(settings, db, dialect, cipher).order_page(order, platform_operator("dpo"))
    people = [p for m in page.conversation.messages for p in (m.sender, m.recipient)]
    customers_shown = {p.alias for p in people if p.role is ParticipantRole.CUSTOMER}
    assert customers_shown == {ERASED}, customers_shown
    assert store_alias in {p.alias for p in people}
    subjects = [m.subject for m in page.conversation.messages]
    assert subjects.count(ERASED) >= 4 and set(subjects) <= {ERASED, ""}, subjects

    after = await _api_conversation(settings, db, order)
    api_customers = {
        p["emailAlias"] for m in after["messages"] for p in [m["from"], *m["to"]]
        if p["role"] == "CUSTOMER"
    }  # fmt: skip
    assert api_customers == {ERASED}, api_customers
    assert not [what for what, t in traces.items() if t.decode() in json.dumps(after)]

    scan = await _scan_everything(settings, db, traces, person)
    print("\nscan after erasure (soft aliases):\n" + json.dumps(scan, indent=2))
    assert [where for where, found in flatten(scan) if found] == []
    oms = await scan_topic(settings, settings.topic_order_status, traces)
    assert "address" in oms  # the OMS's own input topic, not ours: the scan sees what is there


async def _scan_everything(
    settings: Settings, db: mongo.Database, traces: dict[str, bytes], person: Person
) -> dict[str, Any]:
    """Every collection, ours topics, and a replay of the timeline topic into an empty database."""
    fresh = settings.model_copy(
        update={"mongo_db": settings.mongo_db + "_soft_replay",
                "group_projector": settings.group_projector + "-soft-replay"}
    )  # fmt: skip
    replayed_db = db.client[fresh.mongo_db]
    try:
        async with running(ProjectorService(fresh, CODEC)):
            await eventually(
                lambda: _entries_at_least(replayed_db, person.orders[0], 6), what="the replay"
            )
        return await scan_everything(settings, db, replayed_db, traces)
    finally:
        await db.client.drop_database(fresh.mongo_db)


async def _api_conversation(settings: Settings, db: mongo.Database, order_id: str) -> Any:
    """The order's conversation as `GET /api/orders/{id}/conversation` answers an admin."""
    accounts = build_accounts(db, settings, SystemClock())
    name = f"dpo-{uuid.uuid4().hex[:6]}"
    await accounts.add_user(name, Role.ADMIN, f"pw-{uuid.uuid4().hex}", by=platform_operator("t"))
    token, _ = await accounts.create_token(name, "tests", by=platform_operator("t"))
    web = settings.model_copy(update={"web_port": free_web_port()})
    service = WebService(web, AddressCipher(web.data_keys()))
    # The client's address is read once the service listens (the `with` enters in order).
    async with (
        running(service),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.port}") as client,
    ):
        response = await client.get(
            f"/api/orders/{order_id}/conversation",
            headers={"Authorization": f"Bearer {token.value}"},
        )
    assert response.status_code == 200, response.text
    return response.json()


async def _count(
    settings: Settings, db: mongo.Database, order_id: str, kind: TimelineKind, want: int
) -> bool:
    entries = await opened_timeline(settings, db, order_id) or []
    return len([e for e in entries if e.kind is kind]) >= want


async def _entries_at_least(db: mongo.Database, order_id: str, want: int) -> bool:
    doc = await db["orders"].find_one({"_id": order_id}, {"entryCount": 1})
    return doc is not None and doc["entryCount"] >= want
