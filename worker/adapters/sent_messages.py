"""The `sent_messages` collection: what we sent under each VERP address, aliases only.

Written before the message is handed to the upstream, so that a bounce, however fast it comes
back, finds the order and the message it is about; `_id` is the message's timeline event id,
which its VERP token carries. Retries of a send write the same document again, which is a no-op.
"""

from __future__ import annotations

import contextlib

from pymongo.errors import DuplicateKeyError

from worker.adapters.mongo import Database
from worker.domain.bounces import SentMessage
from worker.events import ConversationMessage


class SentMessages:
    def __init__(self, db: Database) -> None:
        self._sent = db["sent_messages"]

    async def remember(self, sent: SentMessage) -> None:
        # A retry of the same message writes the same document: the first write stands.
        with contextlib.suppress(DuplicateKeyError):
            await self._sent.insert_one(
                {
                    "_id": sent.event_id,
                    "orderId": sent.order_id,
                    "storeId": sent.store_id,
                    "message": sent.message.to_record(),
                    "expiresAt": sent.expires_at,
                }
            )

    async def find(self, event_id: str) -> SentMessage | None:
        doc = await self._sent.find_one({"_id": event_id})
        if doc is None:
            return None
        return SentMessage(
            event_id=doc["_id"],
            order_id=doc["orderId"],
            store_id=doc["storeId"],
            message=ConversationMessage.model_validate(doc["message"]),
            expires_at=doc["expiresAt"],
        )
