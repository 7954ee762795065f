"""Bounces of real notifications, read by the relay's bounce intake: real Kafka, FerretDB, SMTP.

The notifier sends through the test's capture server; the DSNs are Postfix's own (fixtures made
by tests/support/postfix.py), delivered to the VERP address the notification really carried.
The relay over SMTP, with Postfix bouncing live, is tested in test_relay_bounces.py.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from pydantic import SecretStr

from tests.conftest import REPO, Capture
from tests.helpers import CODEC, running
from tests.support.clock import MovableClock
from tests.support.kafka import consumed_to_the_end
from tests.support.polling import eventually
from tests.support.timelines import emit_status, opened_timeline, timeline_when
from worker.adapters import mongo
from worker.adapters.alias_store import AliasStore
from worker.adapters.dialect import detect_dialect
from worker.adapters.messages import MessageStore
from worker.adapters.subject_keys import SubjectKeys
from worker.adapters.suppressions import Suppressions
from worker.apps.notifier import NotifierService
from worker.apps.projector import ProjectorService
from worker.contracts.events import FailureType, OrderStatus, TimelineEvent, TimelineKind
from worker.core.config import Settings
from worker.core.crypto import AddressCipher, generate_key
from worker.domain.aliases import SystemClock
from worker.domain.replies import RECIPIENT_OK, REPORT_RECEIVED
from worker.services.bounce_intake import BounceIntake
from worker.services.outbound import MailKeys
from worker.services.subjects import Subjects
from worker.services.suppression import CustomerSuppression

pytestmark = pytest.mark.stack
FIXTURES = Path(__file__).parent.parent / "fixtures" / "bounces"
CUSTOMER = "nouser@mailbox.test"
CT = str(REPO / ".venv" / "bin" / "ct")


@dataclass
class Intake:
    intake: BounceIntake
    clock: MovableClock


@pytest.fixture
async def intake(topics: Settings, db: mongo.Database) -> AsyncIterator[Intake]:
    dialect = await detect_dialect(db)
    cipher = AddressCipher(topics.data_keys())
    clock = MovableClock(SystemClock().now())
    producer: AIOKafkaProducer[bytes, bytes] = AIOKafkaProducer(
        bootstrap_servers=topics.kafka_bootstrap, enable_idempotence=True
    )
    await producer.start()

    keys = SubjectKeys(db, cipher, clock=clock)
    aliases = AliasStore(
        db, cipher, domain=topics.domain, ttl_days=topics.alias_ttl_days, clock=clock,
        dialect=dialect, subject_keys=keys,
    )  # fmt: skip
    subjects = Subjects(keys, aliases)

    async def publish(event: TimelineEvent) -> None:
        # Sealed as the relay's publish seals it.
        value = CODEC.encode(await subjects.seal(event))
        await producer.send_and_wait(
            topics.topic_timeline, key=event.order_id.encode(), value=value
        )

    suppression = CustomerSuppression(
        Suppressions(db, dialect, store_wide=topics.bounce_suppress_store),
        aliases,
        store_wide=topics.bounce_suppress_store,
    )
    try:
        bounce_intake = BounceIntake(
            addresses=MailKeys.load(topics).bounce_addresses,
            messages=MessageStore(
                db,
                cipher,
                retention_days=60,
                clock=clock,
                dialect=dialect,
                subject_keys=subjects.keys,
            ),
            aliases=aliases,
            suppression=suppression,
            publish=publish,
            clock=clock,
        )
        yield Intake(bounce_intake, clock)
    finally:
        await producer.stop()


def _services(settings: Settings) -> tuple[NotifierService, ProjectorService]:
    notifier = NotifierService(
        settings, CODEC, AddressCipher(settings.data_keys()), MailKeys.load(settings)
    )
    return notifier, ProjectorService(settings, CODEC)


async def _settled(settings: Settings) -> None:
    """The notifier and then the projector have done all there is to do (their commits)."""
    await consumed_to_the_end(settings, settings.topic_order_status, settings.group_notifier)
    await consumed_to_the_end(settings, settings.topic_timeline, settings.group_projector)


async def ct(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    assert settings.encryption_key is not None
    env = {
        **os.environ,
        "CT_MONGO_DB": settings.mongo_db,
        "CT_ENCRYPTION_KEY": settings.encryption_key.get_secret_value(),
        "CT_LOG_FORMAT": "json",
    }
    return await asyncio.to_thread(
        subprocess.run, [CT, *args], capture_output=True, text=True, env=env, timeout=120
    )


async def test_a_hard_bounce_is_recorded_once_and_suppresses_the_next_notification(
    topics: Settings, with_capture: Settings, capture: Capture, db: mongo.Database, intake: Intake
) -> None:
    order_id = "o-bounce"
    await emit_status(with_capture, order_id, OrderStatus.PAYMENT_APPROVED, CUSTOMER)
    dsn = (FIXTURES / "postfix-unknown-user.eml").read_bytes()
    async with running(*_services(with_capture)):
        [sent] = await eventually(capture.messages, what="the notification")
        return_path = sent["mailFrom"]
        intake.clock.set(datetime.now(UTC))
        assert await intake.intake.check_recipient(return_path) == RECIPIENT_OK
        assert await intake.intake.receive(dsn, return_path) == REPORT_RECEIVED
        # The same DSN again (the reporting server retried): no second entry.
        assert await intake.intake.receive(dsn, return_path) == REPORT_RECEIVED
        entries = await eventually(
            timeline_when(db, order_id, lambda e: len(e) >= 3, topics),
            what="the bounce on the timeline",
        )
        await emit_status(with_capture, order_id, OrderStatus.HANDLING, CUSTOMER)
        entries = await eventually(
            timeline_when(db, order_id, lambda e: len(e) >= 5, topics),
            what="the suppressed notification",
        )
        await _settled(with_capture)
        entries = await opened_timeline(topics, db, order_id) or []
    assert [e.kind for e in entries] == [
        TimelineKind.STATUS_CHANGED, TimelineKind.NOTIFICATION_SENT, TimelineKind.DELIVERY_FAILED,
        TimelineKind.STATUS_CHANGED, TimelineKind.DELIVERY_FAILED,
    ]  # fmt: skip
    bounce, suppressed = entries[2], entries[4]
    assert bounce.causation_id == entries[1].event_id
    assert bounce.delivery is not None and bounce.delivery.status == "5.1.1"
    assert bounce.delivery.failure_type is FailureType.HARD_BOUNCE
    assert bounce.message is not None and entries[1].message is not None
    assert bounce.message.to.alias == entries[1].message.to.alias
    assert suppressed.message is not None and suppressed.message.reason == "suppressed"
    assert suppressed.delivery is not None and suppressed.delivery.status == "5.1.1"
    assert len(capture.messages()) == 1  # nothing was sent the second time
    for entry in entries:
        assert CUSTOMER not in entry.model_dump_json() and "nouser" not in entry.model_dump_json()

    customer_alias = entries[1].message.to.alias
    resolved = await ct(topics, "alias", "resolve", customer_alias, "--reason", "bounce check")
    assert "SUPPRESSED for this order" in resolved.stdout and "5.1.1" in resolved.stdout, resolved
    lifted = await ct(topics, "alias", "unsuppress", customer_alias, "--reason", "fixed address")
    assert "lifted the order suppression (5.1.1" in lifted.stdout, lifted
    audit = await db["audit"].find_one({"action": "alias.unsuppress"})
    assert audit is not None and audit["reason"] == "fixed address"
    again = await ct(topics, "alias", "resolve", customer_alias, "--reason", "bounce check")
    assert "no hard bounce" in again.stdout
    await emit_status(with_capture, order_id, OrderStatus.INVOICED, CUSTOMER)
    async with running(*_services(with_capture)):
        await eventually(lambda: len(capture.messages()) == 2, what="the email after lifting")


async def test_a_soft_bounce_and_a_complaint_are_recorded_without_suppressing(
    topics: Settings, with_capture: Settings, capture: Capture, db: mongo.Database, intake: Intake
) -> None:
    order_id = "o-soft"
    await emit_status(with_capture, order_id, OrderStatus.PAYMENT_APPROVED, CUSTOMER)
    async with running(*_services(with_capture)):
        [sent] = await eventually(capture.messages, what="the notification")
        intake.clock.set(datetime.now(UTC))
        for name in ("postfix-mailbox-full-delayed.eml", "arf-abuse.eml"):
            raw = (FIXTURES / name).read_bytes()
            assert await intake.intake.receive(raw, sent["mailFrom"]) == REPORT_RECEIVED
        await eventually(
            timeline_when(db, order_id, lambda e: len(e) >= 4, topics), what="both reports"
        )
        await emit_status(with_capture, order_id, OrderStatus.HANDLING, CUSTOMER)
        await eventually(lambda: len(capture.messages()) == 2, what="the next email, sent")
        entries = await eventually(
            timeline_when(db, order_id, lambda e: len(e) >= 6, topics), what="all"
        )
    kinds = {e.kind for e in entries}
    assert TimelineKind.COMPLAINT_RECEIVED in kinds
    soft = next(e for e in entries if e.kind is TimelineKind.DELIVERY_FAILED)
    assert soft.delivery is not None and soft.delivery.status == "4.2.2"
    assert soft.delivery.failure_type is FailureType.SOFT_BOUNCE
    complaint = next(e for e in entries if e.kind is TimelineKind.COMPLAINT_RECEIVED)
    assert complaint.delivery is not None and complaint.delivery.feedback_type == "abuse"


async def test_forged_expired_and_unknown_return_paths_are_refused_and_recorded_nowhere(
    topics: Settings, with_capture: Settings, capture: Capture, db: mongo.Database, intake: Intake
) -> None:
    order_id = "o-forged"
    await emit_status(with_capture, order_id, OrderStatus.PAYMENT_APPROVED, CUSTOMER)
    dsn = (FIXTURES / "postfix-unknown-user.eml").read_bytes()
    async with running(*_services(with_capture)):
        [sent] = await eventually(capture.messages, what="the notification")
        real = sent["mailFrom"]
        local, domain = real.split("@")
        forged = f"{local[:-1]}{'a' if local[-1] != 'a' else 'b'}@{domain}"
        other_key = topics.model_copy(update={"encryption_key": SecretStr(generate_key())})
        stranger = MailKeys.load(other_key).bounce_addresses.address(
            str(uuid.uuid4()), intake.clock.now() + timedelta(days=1)
        )
        for address in (forged, stranger, f"bounces+nothing@{domain}"):
            assert await intake.intake.check_recipient(address) == "550 5.1.1 No such address"
            assert await intake.intake.receive(dsn, address) == "550 5.1.1 No such address"
        intake.clock.advance(timedelta(days=topics.alias_ttl_days, hours=1))
        assert await intake.intake.check_recipient(real) == "550 5.1.1 No such address"
        await _settled(with_capture)
        entries = await opened_timeline(topics, db, order_id) or []
    assert [e.kind for e in entries] == [
        TimelineKind.STATUS_CHANGED,
        TimelineKind.NOTIFICATION_SENT,
    ]
    assert await db["suppressions"].count_documents({}) == 0
