"""MongoDB through PyMongo's native asyncio API (AsyncMongoClient): MongoDB 7/8 or FerretDB."""

from __future__ import annotations

from collections.abc import Mapping

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

from worker.adapters.dialect import Dialect, DialectName, Document, detect_dialect
from worker.config import Settings
from worker.retry import retry_transient

Database = AsyncDatabase[Document]

# Indexes for people's and other systems' queries on MongoDB. The workers' own hot reads are all
# by `_id`, the one index FerretDB v1 on SQLite uses for queries.
INDEXES: dict[str, list[IndexModel]] = {
    "orders": [
        IndexModel([("storeId", ASCENDING), ("updatedAt", DESCENDING)], name="store_recent"),
        IndexModel([("status", ASCENDING), ("statusAt", DESCENDING)], name="status_recent"),
    ],
    # Uniqueness per order and role is `alias_keys`' `_id`; this index serves operators' queries.
    "aliases": [IndexModel([("orderId", ASCENDING)], name="by_order")],
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


async def ensure_indexes(
    db: Database, indexes_by_collection: Mapping[str, list[IndexModel]] = INDEXES
) -> None:
    # One index per command: FerretDB v1.24 panics on a createIndexes naming several indexes
    # that all exist already (a second start-up), while one at a time is idempotent on both servers.
    for collection, indexes in indexes_by_collection.items():
        for index in indexes:
            await db[collection].create_indexes([index])


async def prepare(db: Database, dialect: DialectName | None = None) -> Dialect:
    """Create the indexes and learn the server's dialect at start-up, waiting for the database
    if it is not up yet. `dialect` (CT_MONGO_DIALECT) overrides the detection."""

    async def indexes_and_dialect() -> Dialect:
        await ensure_indexes(db)
        return await detect_dialect(db, dialect)

    return await retry_transient(
        indexes_and_dialect, name="mongo.prepare", is_transient=is_transient
    )


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
