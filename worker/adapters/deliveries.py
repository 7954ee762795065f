"""The notifier's ledger: the outcome of every order-status event, so none is emailed twice.

Written as soon as the SMTP upstream answered for good (accepted, or refused permanently), so a
redelivered event (restart, rebalance) finds its outcome here and is not emailed twice. Only a
process killed between an upstream's 250 and this write re-sends, and the notifier's sends take
turns through that window, so a kill re-sends at most one email. It also keeps the timeline
events that outcome produced, so a redelivery republishes the very same ones.

Where an outcome is written is what makes an email one database write: the outcome of a send
goes into the kept message's own document (`messages`, `_id` = the notification's event id,
field `outcome`), written in the same insert as the message. An outcome without an email
(suppressed, erased) is a document of its own there, under the same id, with no body. So one
read by id answers for an event, whatever its outcome.

Before, every outcome was a document of `deliveries` (`_id` = the status event id). A database
that has any is read there too, for the events `messages` does not answer; a new one never has
one, and pays no second read. (Checked once per process: run old and new notifiers side by side
only on a database that has old outcomes.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo.errors import DuplicateKeyError

from worker.adapters.dialect import Dialect, Document
from worker.adapters.messages import MessageStore, SealedMessage
from worker.adapters.mongo import Database
from worker.domain.notifications import notification_event_id


@dataclass(frozen=True)
class Delivery:
    event_id: str
    order_id: str
    sent: bool
    at: datetime
    timeline: list[dict[str, Any]]


class DeliveryLedger:
    def __init__(self, db: Database, *, dialect: Dialect, messages: MessageStore) -> None:
        self._deliveries = db["deliveries"]
        self._dialect = dialect
        self._messages = messages
        self._earlier: bool | None = None  # does `deliveries` hold outcomes of an earlier version

    async def find(self, event_id: str) -> Delivery | None:
        return (await self.find_many([event_id])).get(event_id)

    async def find_many(self, event_ids: Sequence[str]) -> dict[str, Delivery]:
        """The recorded outcomes among these events: one read for a batch (and, on a database
        an earlier version wrote, a second for the events the first did not answer)."""
        by_message = {notification_event_id(e): e for e in event_ids}
        found = {
            by_message[message_id]: _delivery(by_message[message_id], outcome)
            for message_id, outcome in (await self._messages.outcomes(by_message)).items()
        }
        if self._earlier is None:
            self._earlier = await self._deliveries.find_one({}, {"_id": 1}) is not None
        if self._earlier:
            rest = [e for e in event_ids if e not in found]
            for doc in await self._dialect.find_each(self._deliveries, "_id", rest):
                found[doc["_id"]] = _delivery(doc["_id"], doc)
        return found

    async def record(self, delivery: Delivery) -> Delivery:
        """Store an outcome without an email; if another worker stored one first, theirs stands
        and is returned."""
        email = notification_event_id(delivery.event_id)
        written = await self._messages.note_unsent(
            event_id=email, order_id=delivery.order_id, outcome=_fields(delivery)
        )
        return delivery if written else await self._stood(delivery, email)

    async def record_sent(self, delivery: Delivery, message: SealedMessage) -> Delivery:
        """Keep the email with the outcome of its send: one insert. When this event's email was
        kept already (a retry, another worker), the outcome stored first stands and is returned."""
        if await self._messages.insert(message, outcome=_fields(delivery)):
            return delivery
        return await self._stood(delivery, message.doc["_id"])

    async def _stood(self, delivery: Delivery, email: str) -> Delivery:
        """The outcome that stands when this event's document was there already."""
        kept = await self._messages.kept(email) or {}
        if kept.get("outcome"):
            return _delivery(delivery.event_id, kept["outcome"])
        # The message was kept by an earlier version before its send; its outcome, if it has
        # one, is in `deliveries`, and is written there if not.
        try:
            await self._deliveries.insert_one({"_id": delivery.event_id, **_fields(delivery)})
        except DuplicateKeyError:
            doc = await self._deliveries.find_one({"_id": delivery.event_id})
            return _delivery(delivery.event_id, doc) if doc else delivery
        self._earlier = True
        return delivery


def _fields(delivery: Delivery) -> Document:
    return {
        "orderId": delivery.order_id,
        "sent": delivery.sent,
        "at": delivery.at,
        "timeline": delivery.timeline,
    }


def _delivery(event_id: str, doc: Document) -> Delivery:
    return Delivery(event_id, doc["orderId"], doc["sent"], doc["at"], doc["timeline"])
