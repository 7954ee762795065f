"""The `stores` collection: per-store settings. A store that never said otherwise is hard-masked."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from worker.adapters.mongo import Database
from worker.domain.aliases import MaskType


@dataclass(frozen=True)
class StoreSetting:
    store_id: str
    mask: MaskType
    updated_at: datetime | None


class StoreSettings:
    def __init__(self, db: Database) -> None:
        self._stores = db["stores"]

    async def get(self, store_id: str) -> StoreSetting:
        doc = await self._stores.find_one({"_id": store_id})
        if not doc:
            return StoreSetting(store_id, MaskType.HARD, None)
        return StoreSetting(store_id, MaskType(doc.get("mask", "hard")), doc.get("updatedAt"))

    async def set_mask(self, store_id: str, mask: MaskType) -> StoreSetting:
        now = datetime.now(UTC)
        # update_one with upsert on _id alone: nothing can collide, so FerretDB's reply is complete.
        await self._stores.update_one(
            {"_id": store_id}, {"$set": {"mask": mask.value, "updatedAt": now}}, upsert=True
        )
        return StoreSetting(store_id, mask, now)
