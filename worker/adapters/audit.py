"""The `audit` collection: who looked behind a mask, when and why. Written before anything shows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from worker.adapters.mongo import Database


class AuditLog:
    def __init__(self, db: Database) -> None:
        self._audit = db["audit"]

    async def record(self, action: str, *, operator: str, reason: str, **details: Any) -> None:
        """One entry; `details` hold identifiers (an alias, an order id), never a real address."""
        await self._audit.insert_one(
            {
                "at": datetime.now(UTC),
                "action": action,
                "operator": operator,
                "reason": reason,
                **details,
            }
        )
