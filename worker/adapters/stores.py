"""The `stores` collection: per-store settings. A store that never said otherwise is hard-masked
and its aliases expire a fixed time after they were made."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from worker.adapters.dialect import Document
from worker.adapters.mongo import Database
from worker.domain.aliases import AliasExpiry, MaskType


@dataclass(frozen=True)
class StoreSetting:
    store_id: str
    mask: MaskType
    updated_at: datetime | None
    alias_expiry: AliasExpiry = AliasExpiry.FIXED
    updated_by: str | None = None


def _setting(store_id: str, doc: Document | None) -> StoreSetting:
    if not doc:
        return StoreSetting(store_id, MaskType.HARD, None)
    return StoreSetting(
        store_id,
        MaskType(doc.get("mask", "hard")),
        doc.get("updatedAt"),
        AliasExpiry(doc.get("aliasExpiry", AliasExpiry.FIXED.value)),
        doc.get("updatedBy"),
    )


class StoreSettings:
    def __init__(self, db: Database) -> None:
        self._stores = db["stores"]

    async def get(self, store_id: str) -> StoreSetting:
        return _setting(store_id, await self._stores.find_one({"_id": store_id}))

    async def all(self) -> list[StoreSetting]:
        """The stores that have a settings document, by id."""
        return [_setting(doc["_id"], doc) async for doc in self._stores.find({}).sort("_id", 1)]

    async def set_mask(self, store_id: str, mask: MaskType) -> StoreSetting:
        return await self.update(store_id, mask=mask)

    async def update(
        self,
        store_id: str,
        *,
        mask: MaskType | None = None,
        alias_expiry: AliasExpiry | None = None,
        by: str | None = None,
    ) -> StoreSetting:
        """Change the settings given; the others keep their values (or defaults)."""
        fields: Document = {"updatedAt": datetime.now(UTC)}
        if mask is not None:
            fields["mask"] = mask.value
        if alias_expiry is not None:
            fields["aliasExpiry"] = alias_expiry.value
        if by is not None:
            fields["updatedBy"] = by
        # update_one with upsert on _id alone: nothing can collide, so FerretDB's reply is complete.
        await self._stores.update_one({"_id": store_id}, {"$set": fields}, upsert=True)
        return await self.get(store_id)
