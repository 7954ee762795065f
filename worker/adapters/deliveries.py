"""The `deliveries` ledger: one document per order-status event whose email has an outcome.

Written as soon as the SMTP upstream answered for good (accepted, or refused permanently), so a
redelivered event (restart, rebalance) finds its outcome here and is not emailed twice. Only a
process killed between an upstream's 250 and this write re-sends, and the notifier's sends take
turns through that window, so a kill re-sends at most one email. It also keeps the timeline
events that outcome produced, so a redelivery republishes the very same ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo.errors import DuplicateKeyError

from worker.adapters.dialect import Dialect
from worker.adapters.mongo import Database


@dataclass(frozen=True)
class Delivery:
    event_id: str
    order_id: str
    sent: bool
    at: datetime
    timeline: list[dict[str, Any]]


class DeliveryLedger:
    def __init__(self, db: Database, *, dialect: Dialect) -> None:
        self._deliveries = db["deliveries"]
        self._dialect = dialect

    async def find(self, event_id: str) -> Delivery | None:
        return (await self.find_many([event_id])).get(event_id)

    async def find_many(self, event_ids: Sequence[str]) -> dict[str, Delivery]:
        """The recorded outcomes among these events: one query for a whole batch."""
        return {
            doc["_id"]: Delivery(
                doc["_id"], doc["orderId"], doc["sent"], doc["at"], doc["timeline"]
            )
            for doc in await self._dialect.find_each(self._deliveries, "_id", event_ids)
        }

    async def record(self, delivery: Delivery) -> Delivery:
        """Store the outcome; if another worker stored one first, theirs stands and is returned."""
        try:
            await self._deliveries.insert_one(
                {
                    "_id": delivery.event_id,
                    "orderId": delivery.order_id,
                    "sent": delivery.sent,
                    "at": delivery.at,
                    "timeline": delivery.timeline,
                }
            )
        except DuplicateKeyError:
            return await self.find(delivery.event_id) or delivery
        return delivery
