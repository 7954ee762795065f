"""The relay handler's scenarios on in-memory ports, its aiosmtpd hooks driven directly: no
server, no sockets. "250 only when durable": the message kept, the upstream's acceptance and
Kafka's acknowledgement, each one missing gives a 4xx. tests/integration/test_relay.py and
test_relay_bounces.py run the same scenarios over real sockets against the real stack.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiokafka.errors import KafkaTimeoutError
from aiosmtpd.smtp import Session
from pymongo.errors import AutoReconnect

from tests.memory.harness import Ports, relay
from worker.adapters.alias_store import AliasRecord
from worker.contracts.events import FailureType, ParticipantRole, TimelineKind
from worker.domain import replies
from worker.domain.aliases import Party
from worker.domain.bounces import SentMessage
from worker.domain.replies import FORWARDED, RECIPIENT_OK, REPORT_RECEIVED
from worker.services.relay import RelayEnvelope, RelayHandler

CUSTOMER = "jane.roe@example.org"
STORE = "orders@shop.example.com"
FIXTURES = Path(__file__).parent.parent / "fixtures" / "bounces"


@dataclass
class Scene:
    ports: Ports
    handler: RelayHandler
    customer: AliasRecord
    store: AliasRecord

    async def transaction(self, raw: bytes, *, mail_from: str, to: str) -> tuple[str, str]:
        """RCPT then (when accepted) DATA, as aiosmtpd calls the hooks; the two replies."""
        session = Session(asyncio.get_running_loop())
        session.peer = ("127.0.0.1", 40000)  # type: ignore[assignment]  # what a socket gives
        session.host_name = "mx.shop.example.com"
        envelope = RelayEnvelope()
        envelope.mail_from = mail_from
        rcpt = await self.handler.handle_RCPT(None, session, envelope, to, [])  # type: ignore[arg-type]
        if not rcpt.startswith("250"):
            return rcpt, ""
        envelope.content = envelope.original_content = raw
        data = await self.handler.handle_DATA(None, session, envelope)  # type: ignore[arg-type]
        return rcpt, data


@pytest.fixture
async def scene() -> Scene:
    ports = Ports()
    customer, store = await ports.aliases.order_pair(
        "o-relay", "store-1", Party(CUSTOMER, "Jane Roe"), Party(STORE, "Shop Example")
    )
    return Scene(ports, relay(ports), customer, store)


def _mail(sender: str, to: str, subject: str = "Your parcel") -> bytes:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, to, subject
    message["Message-ID"] = "<m1@shop.example.com>"
    message.set_content("Hello Jane, your parcel left today.")
    return message.as_bytes()


async def _store_writes(scene: Scene) -> tuple[str, str]:
    raw = _mail(f"Shop Example <{STORE}>", scene.customer.address)
    return await scene.transaction(raw, mail_from=STORE, to=scene.customer.address)


async def test_a_forward_is_answered_250_after_it_was_kept_sent_and_acknowledged(
    scene: Scene,
) -> None:
    assert await _store_writes(scene) == (RECIPIENT_OK, FORWARDED)
    [delivered] = scene.ports.upstream.delivered
    assert delivered.recipients == [CUSTOMER]
    [event] = scene.ports.timeline()
    assert event.kind is TimelineKind.MESSAGE_FORWARDED and event.order_id == "o-relay"
    assert scene.ports.messages.kept[event.event_id].raw == delivered.raw


def _kafka_times_out(ports: Ports) -> None:
    ports.producer.failures.append(KafkaTimeoutError())


def _upstream_says_451(ports: Ports) -> None:
    ports.upstream.refuse("451 4.3.0 Try again later")


def _store_is_down(ports: Ports) -> None:
    ports.messages.failures.append(AutoReconnect("connection refused"))


@pytest.mark.parametrize(
    ("fault", "reply"),
    [
        (_kafka_times_out, replies.TEMPORARY_FAILURE),
        (_upstream_says_451, replies.UPSTREAM_UNAVAILABLE),
        (_store_is_down, replies.TEMPORARY_FAILURE),
    ],
    ids=["kafka", "upstream", "message-store"],
)
async def test_any_transient_failure_on_the_way_answers_451_so_the_sender_retries(
    scene: Scene, fault: Callable[[Ports], None], reply: str
) -> None:
    fault(scene.ports)
    rcpt, data = await _store_writes(scene)
    assert rcpt == RECIPIENT_OK and data == reply and data.startswith("451")
    # The retry, once the fault is gone, is the one that gets 250.
    assert await _store_writes(scene) == (RECIPIENT_OK, FORWARDED)


async def test_an_upstream_5xx_is_its_own_reply_and_nothing_is_published(scene: Scene) -> None:
    scene.ports.upstream.refuse("550 5.7.1 Refused by policy")
    assert await _store_writes(scene) == (RECIPIENT_OK, "550 5.7.1 Refused by policy")
    assert scene.ports.timeline() == []


async def test_mail_to_another_domain_is_refused_at_rcpt(scene: Scene) -> None:
    raw = _mail(STORE, "someone@elsewhere.example")
    rcpt, _ = await scene.transaction(raw, mail_from=STORE, to="someone@elsewhere.example")
    assert rcpt == replies.RELAY_DENIED
    assert scene.ports.upstream.attempts == 0


async def _sent_notification(scene: Scene) -> tuple[str, SentMessage]:
    """A forward to the customer, as sent: its VERP return path and what a bounce needs."""
    await _store_writes(scene)
    [delivered] = scene.ports.upstream.delivered
    [event] = scene.ports.timeline()
    sent = await scene.ports.messages.sent(event.event_id)
    assert sent is not None
    return delivered.sender, sent


async def test_a_bounce_to_a_verp_address_is_recorded_and_suppresses_the_customer(
    scene: Scene,
) -> None:
    return_path, sent = await _sent_notification(scene)
    fixture = (FIXTURES / "postfix-unknown-user.eml").read_bytes()
    # Issue 19: only a report whose Final-Recipient is the address the message went to
    # suppresses; the fixture's names another one, so it is recorded and suppresses nobody.
    assert await scene.transaction(fixture, mail_from="", to=return_path) == (
        RECIPIENT_OK, REPORT_RECEIVED,
    )  # fmt: skip
    assert await scene.ports.suppression.in_force("o-relay", "store-1", CUSTOMER) is None
    dsn = fixture.replace(b"nouser@mailbox.test", CUSTOMER.encode())
    rcpt, data = await scene.transaction(dsn, mail_from="", to=return_path)
    assert (rcpt, data) == (RECIPIENT_OK, REPORT_RECEIVED)
    bounce = scene.ports.timeline()[-1]
    assert bounce.kind is TimelineKind.DELIVERY_FAILED and bounce.causation_id == sent.event_id
    assert bounce.delivery is not None
    assert bounce.delivery.failure_type is FailureType.HARD_BOUNCE
    assert sent.message.to.role is ParticipantRole.CUSTOMER
    assert await scene.ports.suppression.in_force("o-relay", "store-1", CUSTOMER) is not None


async def test_a_bounce_answers_451_until_kafka_has_its_entry(scene: Scene) -> None:
    return_path, _ = await _sent_notification(scene)
    dsn = (FIXTURES / "postfix-unknown-user.eml").read_bytes()
    scene.ports.producer.failures.append(KafkaTimeoutError())
    assert await scene.transaction(dsn, mail_from="", to=return_path) == (
        RECIPIENT_OK, replies.TEMPORARY_FAILURE,
    )  # fmt: skip
    assert await scene.transaction(dsn, mail_from="", to=return_path) == (
        RECIPIENT_OK, REPORT_RECEIVED,
    )  # fmt: skip


@pytest.mark.parametrize("forgery", ["flipped", "expired", "unknown"])
async def test_a_forged_or_expired_verp_address_is_550_and_recorded_nowhere(
    scene: Scene, forgery: str
) -> None:
    return_path, _ = await _sent_notification(scene)
    published = len(scene.ports.producer.sent)
    local, _, domain = return_path.partition("@")
    address = {
        "flipped": f"{local[:-2]}{'A' if local[-2] != 'A' else 'B'}{local[-1]}@{domain}",
        "expired": return_path,
        "unknown": f"bounces+nothing@{domain}",
    }[forgery]
    if forgery == "expired":
        scene.ports.clock.advance(timedelta(days=61))
    dsn = (FIXTURES / "postfix-unknown-user.eml").read_bytes()
    assert await scene.transaction(dsn, mail_from="", to=address) == (replies.UNKNOWN_ALIAS, "")
    assert len(scene.ports.producer.sent) == published
    assert scene.ports.records.records == {}


@pytest.mark.parametrize(
    ("fixture", "kind", "failure_type"),
    [
        ("postfix-mailbox-full-delayed.eml", TimelineKind.DELIVERY_FAILED, FailureType.SOFT_BOUNCE),
        ("arf-abuse.eml", TimelineKind.COMPLAINT_RECEIVED, FailureType.COMPLAINT),
    ],
    ids=["soft-bounce", "complaint"],
)
async def test_a_soft_bounce_or_a_complaint_is_recorded_without_suppressing(
    scene: Scene, fixture: str, kind: TimelineKind, failure_type: FailureType
) -> None:
    return_path, sent = await _sent_notification(scene)
    report = (FIXTURES / fixture).read_bytes()
    assert await scene.transaction(report, mail_from="", to=return_path) == (
        RECIPIENT_OK, REPORT_RECEIVED,
    )  # fmt: skip
    entry = scene.ports.timeline()[-1]
    assert (entry.kind, entry.causation_id) == (kind, sent.event_id)
    assert entry.delivery is not None and entry.delivery.failure_type is failure_type
    assert scene.ports.records.records == {}


async def test_an_auto_reply_to_a_return_path_is_taken_and_recorded_nowhere(scene: Scene) -> None:
    return_path, _ = await _sent_notification(scene)
    published = len(scene.ports.producer.sent)
    reply = (FIXTURES / "vacation-reply.eml").read_bytes()
    assert await scene.transaction(reply, mail_from="jane@example.org", to=return_path) == (
        RECIPIENT_OK, REPORT_RECEIVED,
    )  # fmt: skip
    assert len(scene.ports.producer.sent) == published and scene.ports.records.records == {}
