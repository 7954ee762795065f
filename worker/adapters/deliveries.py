"""The `deliveries` ledger: one document per order-status event whose email has an outcome.

Written right after the SMTP upstream answered for good (accepted, or refused permanently), so a
redelivered event (restart, rebalance) finds its outcome here and is not emailed twice. It also
keeps the timeline events that outcome produced, so a redelivery republishes the very same ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo.errors import DuplicateKeyError

from worker.adapters.mongo import Database


@dataclass(frozen=True)
class Delivery:
    event_id: str
    order_id: str
    sent: bool
    at: datetime
    timeline: list[dict[str, Any]]


class DeliveryLedger:
    def __init__(self, db: Database) -> None:
        self._deliveries = db["deliveries"]

    async def find(self, event_id: str) -> Delivery | None:
        doc = await self._deliveries.find_one({"_id": event_id})
        if doc is None:
            return None
        return Delivery(doc["_id"], doc["orderId"], doc["sent"], doc["at"], doc["timeline"])

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
