"""Real bounces through the relay: Debian's Postfix as the smarthost, over SMTP end to end.

The notifier and the relay send through a private Postfix (tests/support/postfix.py). Mail to a
user of `mailbox.test` that does not exist is accepted, then bounced by Postfix's local delivery;
mail to `full.test` meets a server answering 452 4.2.2 and Postfix sends a delay warning. Either
DSN goes to the message's VERP return path, which Postfix routes to the relay under test.
"""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.helpers import CODEC, running
from tests.support.kafka import consumed_to_the_end
from tests.support.polling import eventually
from tests.support.postfix import LoopbackPostfix
from tests.support.timelines import emit_status, of_kind, timeline_when
from worker.adapters import mongo
from worker.adapters.alias_store import AliasStore
from worker.adapters.dialect import detect_dialect
from worker.apps.notifier import NotifierService
from worker.apps.projector import ProjectorService
from worker.apps.relay import RelayService
from worker.contracts.events import (
    Direction,
    FailureType,
    OrderStatus,
    ParticipantRole,
    TimelineKind,
)
from worker.core.config import Settings
from worker.core.crypto import AddressCipher
from worker.domain.aliases import Party, SystemClock
from worker.domain.dkim import normalize_line_endings
from worker.services.outbound import MailKeys
from worker.services.timeline import get_timeline

pytestmark = pytest.mark.stack
FIXTURES = Path(__file__).parent.parent / "fixtures" / "bounces"
GONE = "nouser@mailbox.test"
FULL = "rafael.souza@full.test"


@dataclass
class Smarthost:
    settings: Settings
    postfix: LoopbackPostfix


@pytest.fixture
async def smarthost(topics: Settings, postfix: LoopbackPostfix) -> AsyncIterator[Smarthost]:
    """Notifier, relay and projector, the relay on the port Postfix delivers to."""
    settings = topics.model_copy(
        update={"smtp_port": postfix.port, "relay_port": postfix.relay_port}
    )
    cipher = AddressCipher(settings.data_keys())
    keys = MailKeys.load(settings)
    services = (
        NotifierService(settings, CODEC, cipher, keys),
        RelayService(settings, CODEC, cipher, keys),
        ProjectorService(settings, CODEC),
    )
    async with running(*services):
        yield Smarthost(settings, postfix)


async def test_a_postfix_bounce_lands_on_the_timeline_and_suppresses_the_next_email(
    smarthost: Smarthost, db: mongo.Database
) -> None:
    settings = smarthost.settings
    await emit_status(settings, "o-gone", OrderStatus.PAYMENT_APPROVED, GONE)
    entries = await eventually(
        timeline_when(db, "o-gone", lambda e: of_kind(e, TimelineKind.DELIVERY_FAILED), settings),
        timeout=60,
        what="Postfix's bounce on the timeline",
    )
    [sent] = of_kind(entries, TimelineKind.NOTIFICATION_SENT)
    [bounce] = of_kind(entries, TimelineKind.DELIVERY_FAILED)
    assert bounce.causation_id == sent.event_id
    assert bounce.delivery is not None
    assert (bounce.delivery.status, bounce.delivery.failure_type) == (
        "5.1.1", FailureType.HARD_BOUNCE,
    )  # fmt: skip
    assert "nouser" not in bounce.model_dump_json() and GONE not in bounce.model_dump_json()
    log = smarthost.postfix.log()
    assert "status=bounced (unknown user" in log and "250 2.0.0 Report received" in log

    await emit_status(settings, "o-gone", OrderStatus.HANDLING, GONE)
    entries = await eventually(
        timeline_when(
            db, "o-gone", lambda e: len(of_kind(e, TimelineKind.DELIVERY_FAILED)) == 2, settings
        ),
        what="the suppressed notification",
    )
    suppressed = of_kind(entries, TimelineKind.DELIVERY_FAILED)[-1]
    assert suppressed.message is not None and suppressed.message.reason == "suppressed"
    await consumed_to_the_end(settings, settings.topic_order_status, settings.group_notifier)
    assert smarthost.postfix.log().count("to=<nouser@mailbox.test>") == 1  # sent once only


async def test_a_delayed_mailbox_full_bounce_is_recorded_without_suppressing(
    smarthost: Smarthost, db: mongo.Database
) -> None:
    settings = smarthost.settings
    await emit_status(settings, "o-full", OrderStatus.PAYMENT_APPROVED, FULL)
    entries = await eventually(
        timeline_when(db, "o-full", lambda e: of_kind(e, TimelineKind.DELIVERY_FAILED), settings),
        timeout=60,
        what="Postfix's delay warning on the timeline",
    )
    [soft] = of_kind(entries, TimelineKind.DELIVERY_FAILED)
    assert soft.delivery is not None
    assert (soft.delivery.status, soft.delivery.failure_type, soft.delivery.action) == (
        "4.2.2", FailureType.SOFT_BOUNCE, "delayed",
    )  # fmt: skip
    await emit_status(settings, "o-full", OrderStatus.HANDLING, FULL)
    await eventually(
        timeline_when(
            db, "o-full", lambda e: len(of_kind(e, TimelineKind.NOTIFICATION_SENT)) == 2, settings
        ),
        what="the next notification, sent",
    )


def _smtp(port: int, sender: str, recipient: str, message: bytes) -> tuple[int, bytes]:
    """One SMTP transaction with smtplib; the reply to RCPT when refused, else to DATA."""
    with smtplib.SMTP("127.0.0.1", port) as client:
        client.ehlo("mailbox-provider.test")
        client.mail(sender)
        code, text = client.rcpt(recipient)
        if code != 250:
            return code, text
        return client.data(message)


async def test_a_complaint_and_a_forged_return_path_over_smtp(
    smarthost: Smarthost, db: mongo.Database
) -> None:
    """A mailbox provider's RFC 5965 report to the return path; a forged one refused at RCPT."""
    settings = smarthost.settings
    await emit_status(settings, "o-arf", OrderStatus.PAYMENT_APPROVED, GONE)
    entries = await eventually(
        timeline_when(db, "o-arf", lambda e: of_kind(e, TimelineKind.DELIVERY_FAILED), settings),
        timeout=60,
        what="the notification and its bounce",
    )
    [sent] = of_kind(entries, TimelineKind.NOTIFICATION_SENT)
    record = await db["messages"].find_one({"_id": sent.event_id})
    assert record is not None
    return_path = MailKeys.load(settings).bounce_addresses.address(
        sent.event_id, record["bounceUntil"]
    )
    report = normalize_line_endings((FIXTURES / "arf-abuse.eml").read_bytes())
    port = settings.relay_port
    code, text = await asyncio.to_thread(_smtp, port, "abuse@provider.test", return_path, report)
    assert code == 250, text
    entries = await eventually(
        timeline_when(db, "o-arf", lambda e: of_kind(e, TimelineKind.COMPLAINT_RECEIVED), settings),
        what="the complaint",
    )
    [complaint] = of_kind(entries, TimelineKind.COMPLAINT_RECEIVED)
    assert complaint.causation_id == sent.event_id
    assert complaint.delivery is not None and complaint.delivery.feedback_type == "abuse"

    local, domain = return_path.split("@")
    forged = f"{local[:-2]}{'zz' if not local.endswith('zz') else 'yy'}@{domain}"
    for sender in ("", "abuse@provider.test"):
        code, text = await asyncio.to_thread(_smtp, port, sender, forged, report)
        assert (code, text.decode()) == (550, "5.1.1 No such address")
    settings = smarthost.settings
    await consumed_to_the_end(settings, settings.topic_timeline, settings.group_projector)
    assert len(await get_timeline(db, "o-arf") or []) == len(entries)  # nothing recorded


async def test_a_bounced_forward_is_recorded_with_its_direction_and_roles(
    smarthost: Smarthost, db: mongo.Database
) -> None:
    settings = smarthost.settings
    aliases = AliasStore(
        db, AddressCipher(settings.data_keys()), domain=settings.domain, ttl_days=60,
        clock=SystemClock(), dialect=await detect_dialect(db),
    )  # fmt: skip
    customer, _ = await aliases.order_pair(
        "o-fwd", "store-1", Party(GONE, "Nobody"), Party("sac@shop.test", "Shop")
    )
    mail = EmailMessage()
    mail["From"] = "Shop <sac@shop.test>"
    mail["To"] = customer.address
    mail["Subject"] = "About your order"
    mail.set_content("Hello!")
    code, _ = await asyncio.to_thread(
        _smtp, settings.relay_port, "sac@shop.test", customer.address, bytes(mail)
    )
    assert code == 250
    entries = await eventually(
        timeline_when(db, "o-fwd", lambda e: of_kind(e, TimelineKind.DELIVERY_FAILED), settings),
        timeout=60,
        what="the forward's bounce",
    )
    [forwarded] = of_kind(entries, TimelineKind.MESSAGE_FORWARDED)
    [bounce] = of_kind(entries, TimelineKind.DELIVERY_FAILED)
    assert bounce.causation_id == forwarded.event_id
    assert bounce.message is not None and forwarded.message is not None
    assert bounce.message.direction is Direction.TO_CUSTOMER
    # The bounce names the forward's participants by their roles and aliases, as it did (the
    # store's mail counts as the store's only once SPF/DKIM/DMARC say so; here it is external).
    assert (bounce.message.from_, bounce.message.to) == (
        forwarded.message.from_, forwarded.message.to,
    )  # fmt: skip
    assert bounce.message.to.role is ParticipantRole.CUSTOMER
    assert bounce.message.to.alias == customer.address
    assert bounce.delivery is not None and bounce.delivery.status == "5.1.1"
