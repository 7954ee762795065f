"""The delivery ledger and the message store in memory and on the real database: one test body
over both backends, so that what the unit tests of the services rely on is what MongoDB does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.memory.stores import MemoryLedger, MemoryMessages
from tests.support.clock import MovableClock
from tests.support.events import timeline_event
from worker.adapters import mongo
from worker.adapters.deliveries import Delivery, DeliveryLedger
from worker.adapters.dialect import detect_dialect
from worker.adapters.messages import MessageStore, SealedMessage
from worker.contracts.events import TimelineKind
from worker.core.config import Settings
from worker.core.crypto import AddressCipher
from worker.domain.bounces import SentMessage
from worker.domain.notifications import notification_event_id
from worker.services.ports import Ledger, Messages

pytestmark = pytest.mark.stack
AT = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["memory", "mongodb"])
async def books(
    request: pytest.FixtureRequest, db: mongo.Database, settings: Settings
) -> tuple[Ledger, Messages]:
    """A ledger and the message store it keeps emails in."""
    clock = MovableClock(AT)
    if request.param == "memory":
        memory = MemoryMessages(clock)
        return MemoryLedger(memory), memory
    dialect = await detect_dialect(db)
    store = MessageStore(
        db, AddressCipher(settings.data_keys()), retention_days=30, clock=clock, dialect=dialect
    )
    return DeliveryLedger(db, dialect=dialect, messages=store), store


async def test_the_ledgers_first_outcome_stands_for_every_later_writer(
    books: tuple[Ledger, Messages],
) -> None:
    ledger, _ = books
    first = Delivery("e-1", "o-1", True, AT, [{"kind": "NOTIFICATION_SENT"}])
    second = Delivery("e-1", "o-1", False, AT + timedelta(seconds=1), [])
    assert await ledger.record(first) == first
    assert await ledger.record(second) == first  # a racing worker gets the first outcome
    found = await ledger.find_many(["e-1", "e-2"])
    assert list(found) == ["e-1"] and found["e-1"].sent is True


async def test_an_email_is_kept_with_its_outcome_and_the_first_outcome_stands(
    books: tuple[Ledger, Messages],
) -> None:
    ledger, messages = books
    email = notification_event_id("e-1")
    outcome = timeline_event("o-1", kind=TimelineKind.NOTIFICATION_SENT, event_id=email)
    sent = SentMessage.of(outcome, AT + timedelta(days=1))

    async def sealed() -> SealedMessage:
        return await messages.seal(
            event_id=email,
            order_id="o-1",
            store_id="store-1",
            raw=b"the email",
            sent=sent,
        )

    first = Delivery("e-1", "o-1", True, AT, [outcome.to_record()])
    racing = Delivery("e-1", "o-1", False, AT + timedelta(seconds=1), [])
    assert await ledger.record_sent(first, await sealed()) == first
    assert await ledger.record_sent(racing, await sealed()) == first  # the other worker's
    found = await ledger.find_many(["e-1", "e-2"])
    assert list(found) == ["e-1"] and found["e-1"] == first
    assert await messages.sent(email) == sent  # a bounce finds it


@pytest.fixture(params=["memory", "mongodb"])
async def messages(
    request: pytest.FixtureRequest, db: mongo.Database, settings: Settings
) -> tuple[Messages, MovableClock]:
    clock = MovableClock(AT)
    if request.param == "memory":
        return MemoryMessages(clock), clock
    store = MessageStore(
        db, AddressCipher(settings.data_keys()), retention_days=60, clock=clock,
        dialect=await detect_dialect(db),
    )  # fmt: skip
    return store, clock


async def test_a_message_is_kept_once_and_names_its_bounce_until_it_expires(
    messages: tuple[Messages, MovableClock],
) -> None:
    store, clock = messages
    event = timeline_event("o-1", kind=TimelineKind.NOTIFICATION_SENT)
    sent = SentMessage.of(event, AT + timedelta(days=1))
    kept = await store.keep(
        event_id=event.event_id, order_id="o-1", store_id="store-1", raw=b"x", sent=sent
    )
    again = await store.keep(
        event_id=event.event_id, order_id="o-1", store_id="store-1", raw=b"x", sent=sent
    )
    assert (kept, again) == (True, False)
    assert await store.sent(event.event_id) == sent
    assert await store.sent("no-such-event") is None
    clock.advance(timedelta(days=1, seconds=1))
    assert await store.sent(event.event_id) is None  # its bounce address has expired


async def test_an_outcome_without_an_email_is_no_kept_message_and_earlier_outcomes_still_count(
    db: mongo.Database, settings: Settings
) -> None:
    dialect = await detect_dialect(db)
    store = MessageStore(
        db, AddressCipher(settings.data_keys()), retention_days=30, clock=MovableClock(AT),
        dialect=dialect,
    )  # fmt: skip
    suppressed = Delivery("e-s", "o-1", False, AT, [{"kind": "DELIVERY_FAILED"}])
    assert await DeliveryLedger(db, dialect=dialect, messages=store).record(suppressed)
    email = notification_event_id("e-s")
    assert await store.describe([email]) == {} and await store.of_orders(["o-1"]) == []
    assert await store.open(email, "o-1") is None
    # A database an earlier version wrote: its outcomes are in `deliveries`.
    earlier = {"_id": "e-old", "orderId": "o-2", "sent": True, "at": AT, "timeline": []}
    await db["deliveries"].insert_one(earlier)
    found = await DeliveryLedger(db, dialect=dialect, messages=store).find_many(["e-s", "e-old"])
    assert found == {"e-s": suppressed, "e-old": Delivery("e-old", "o-2", True, AT, [])}
