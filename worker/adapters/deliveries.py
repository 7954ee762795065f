"""The notifier's ledger: the outcome of every order-status event, so none is emailed twice.

Written as soon as the SMTP upstream answered for good (accepted, or refused permanently), so a
redelivered event (restart, rebalance) finds its outcome here and is not emailed twice. Only a
process killed between an upstream's 250 and this write re-sends, and the notifier's sends take
turns through that window, so a kill re-sends at most one email. It also keeps the timeline
events that outcome produced, so a redelivery republishes the very same ones.

Where an outcome is written is what makes an email one database write: the outcome of a send
goes into the kept message's own document (`messages`, `_id` = the notification's event id,
field `outcome`), written in the same insert as the message. An outcome without an email
(suppressed, erased) has no message to ride on and is a document of `deliveries`, `_id` = the
status event id, as every outcome was before; the ledger reads both, so a database written by
an earlier version keeps its outcomes.
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

    async def find(self, event_id: str) -> Delivery | None:
        return (await self.find_many([event_id])).get(event_id)

    async def find_many(self, event_ids: Sequence[str]) -> dict[str, Delivery]:
        """The recorded outcomes among these events: a read of each collection for a batch, the
        second only for the events the first did not answer."""
        by_message = {notification_event_id(e): e for e in event_ids}
        found = {
            by_message[message_id]: _delivery(by_message[message_id], outcome)
            for message_id, outcome in (await self._messages.outcomes(by_message)).items()
        }
        rest = [e for e in event_ids if e not in found]
        for doc in await self._dialect.find_each(self._deliveries, "_id", rest):
            found[doc["_id"]] = _delivery(doc["_id"], doc)
        return found

    async def record(self, delivery: Delivery) -> Delivery:
        """Store an outcome without an email; if another worker stored one first, theirs stands
        and is returned."""
        try:
            await self._deliveries.insert_one({"_id": delivery.event_id, **_fields(delivery)})
        except DuplicateKeyError:
            return await self.find(delivery.event_id) or delivery
        return delivery

    async def record_sent(self, delivery: Delivery, message: SealedMessage) -> Delivery:
        """Keep the email with the outcome of its send: one insert. When this event's email was
        kept already (a retry, another worker), the outcome stored first stands and is returned."""
        kept = await self._messages.insert(message, outcome=_fields(delivery))
        if kept is None:
            return delivery
        if kept.get("outcome"):
            return _delivery(delivery.event_id, kept["outcome"])
        # Kept by an earlier version before its send, whose outcome went to `deliveries`.
        return await self.record(delivery)


def _fields(delivery: Delivery) -> Document:
    return {
        "orderId": delivery.order_id,
        "sent": delivery.sent,
        "at": delivery.at,
        "timeline": delivery.timeline,
    }


def _delivery(event_id: str, doc: Document) -> Delivery:
    return Delivery(event_id, doc["orderId"], doc["sent"], doc["at"], doc["timeline"])
