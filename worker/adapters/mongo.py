"""MongoDB through PyMongo's native asyncio API (AsyncMongoClient): MongoDB 7/8 or FerretDB."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
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
from worker.retry import retry_transient

Document = dict[str, Any]
Database = AsyncDatabase[Document]
READ_CONCURRENCY = 32

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


async def find_each(
    collection: AsyncCollection[Document],
    field: str,
    values: Iterable[Any],
    projection: Mapping[str, Any] | None = None,
) -> list[Document]:
    """The documents whose `field` equals one of `values`, one equality read each, concurrently.

    Not `{field: {"$in": values}}`: FerretDB v1 on SQLite pushes equality filters down to SQLite
    (about 1 ms at 30,000 documents) but evaluates `$in` by scanning the whole collection (about
    700 ms there, growing with it). Concurrent equality reads cost about the same on MongoDB.
    """
    slots = asyncio.Semaphore(READ_CONCURRENCY)

    async def one(value: Any) -> list[Document]:
        async with slots:
            return await collection.find({field: value}, projection).to_list()

    found = await asyncio.gather(*(one(v) for v in dict.fromkeys(values)))
    return [doc for docs in found for doc in docs]


async def is_ferretdb(db: Database) -> bool:
    """FerretDB names itself in buildInfo; MongoDB does not."""
    info = await db.client.admin.command("buildInfo")
    return "ferretdbVersion" in info


async def prepare(db: Database) -> None:
    """Create the indexes at start-up, waiting for the database if it is not up yet."""
    await retry_transient(
        lambda: ensure_indexes(db), name="mongo.indexes", is_transient=is_transient
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
