"""MongoDB through PyMongo's native asyncio API (AsyncMongoClient): MongoDB 7/8 or FerretDB."""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    AutoReconnect,
    ConnectionFailure,
    ExecutionTimeout,
    NetworkTimeout,
    ServerSelectionTimeoutError,
    WriteConcernError,
)

from worker.config import Settings

Document = dict[str, Any]
Database = AsyncDatabase[Document]

# Collections and the indexes their queries need. FerretDB v1 has no partial or TTL-less
# surprises here: only plain and unique compound indexes are used, which both servers support.
INDEXES: dict[str, list[IndexModel]] = {
    "orders": [
        IndexModel([("storeId", ASCENDING), ("updatedAt", DESCENDING)], name="store_recent"),
        IndexModel([("status", ASCENDING), ("statusAt", DESCENDING)], name="status_recent"),
    ],
    "aliases": [
        IndexModel([("orderKey", ASCENDING)], name="one_per_order_role", unique=True),
        IndexModel([("orderId", ASCENDING)], name="by_order"),
    ],
    "deliveries": [IndexModel([("orderId", ASCENDING)], name="by_order")],
    "audit": [IndexModel([("alias", ASCENDING), ("at", DESCENDING)], name="by_alias")],
}


def connect(
    settings: Settings, *, app_name: str, timeout_ms: int = 5_000
) -> AsyncMongoClient[Document]:
    return AsyncMongoClient(
        settings.mongo_uri,
        appname=app_name,
        tz_aware=True,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
    )


async def ensure_indexes(db: Database) -> None:
    # One index per command: FerretDB v1.24 panics on a createIndexes naming several indexes
    # that all exist already (a second start-up), while one at a time is idempotent on both servers.
    for collection, indexes in INDEXES.items():
        for index in indexes:
            await db[collection].create_indexes([index])


def is_transient(exc: BaseException) -> bool:
    """Errors that a retry can cure: the server is down, restarting or unreachable."""
    return isinstance(
        exc,
        AutoReconnect
        | ConnectionFailure
        | ServerSelectionTimeoutError
        | NetworkTimeout
        | ExecutionTimeout
        | WriteConcernError
        | OSError,
    )
