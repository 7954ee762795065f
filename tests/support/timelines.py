"""Order events in, timeline entries out: the waits of the bounce and suppression tests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from tests.helpers import CODEC, produce
from tests.support.events import order_event
from tests.support.polling import Condition
from worker.adapters import mongo
from worker.contracts.events import OrderStatus, TimelineEvent, TimelineKind
from worker.core.config import Settings
from worker.services.subjects import Subjects
from worker.services.timeline import get_timeline


async def emit_status(
    settings: Settings, order_id: str, status: OrderStatus, customer: str
) -> None:
    """One order-status event for `customer`, happening now (so that it sorts after the last)."""
    event = order_event(order_id, status, customer_email=customer, at=datetime.now(UTC))
    await produce(settings, settings.topic_order_status, [(order_id, CODEC.encode(event))])


def subjects_of(settings: Settings, db: mongo.Database) -> Subjects:
    """What opens the personal fields of timeline entries, as `ct timeline` does: no caches."""
    from worker.adapters.dialect import FERRETDB
    from worker.apps.builder import Stores
    from worker.core.crypto import AddressCipher

    cipher = AddressCipher(settings.data_keys())
    return Stores(db, FERRETDB, settings, cipher, cache_aliases=False).subjects


async def opened_timeline(
    settings: Settings, db: mongo.Database, order_id: str
) -> list[TimelineEvent] | None:
    """The order's entries as a reader sees them: personal fields opened."""
    return await get_timeline(db, order_id, subjects_of(settings, db))


def timeline_when(
    db: mongo.Database,
    order_id: str,
    want: Callable[[list[TimelineEvent]], Any],
    settings: Settings | None = None,
) -> Condition:
    """A condition for `eventually`: the order's entries once `want(entries)` holds (opened,
    given the settings)."""

    async def check() -> list[TimelineEvent] | None:
        subjects = subjects_of(settings, db) if settings is not None else None
        entries = await get_timeline(db, order_id, subjects) or []
        return entries if want(entries) else None

    return check


def of_kind(entries: list[TimelineEvent], kind: TimelineKind) -> list[TimelineEvent]:
    return [e for e in entries if e.kind is kind]
