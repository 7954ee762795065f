"""MongoDB through PyMongo's native asyncio API (AsyncMongoClient): MongoDB 7/8 or FerretDB."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    AutoReconnect,
    ConfigurationError,
    ConnectionFailure,
    ExecutionTimeout,
    NetworkTimeout,
    OperationFailure,
    ServerSelectionTimeoutError,
    WriteConcernError,
)

from worker.adapters.dialect import Dialect, DialectName, Document, detect_dialect
from worker.core.config import Rejected, Settings, Unreachable
from worker.core.retry import retry_transient

Database = AsyncDatabase[Document]

# Indexes for people's and other systems' queries on MongoDB. The workers' own hot reads are all
# by `_id`, the one index FerretDB v1 on SQLite uses for queries.
INDEXES: dict[str, list[IndexModel]] = {
    "orders": [
        IndexModel([("storeId", ASCENDING), ("updatedAt", DESCENDING)], name="store_recent"),
        IndexModel([("status", ASCENDING), ("statusAt", DESCENDING)], name="status_recent"),
    ],
    # Entries moved out of an order document past its size budget (adapters/orders.py).
    "order_timeline_overflow": [IndexModel([("orderId", ASCENDING)], name="by_order")],
    # Uniqueness per order and role is `alias_keys`' `_id`; this index serves operators' queries.
    "aliases": [IndexModel([("orderId", ASCENDING)], name="by_order")],
    "deliveries": [IndexModel([("orderId", ASCENDING)], name="by_order")],
    "audit": [IndexModel([("alias", ASCENDING), ("at", DESCENDING)], name="by_alias")],
}


AUTHENTICATION_FAILED = 18
_CERTIFICATE_FAILURES = ("CERTIFICATE_VERIFY_FAILED", "certificate verify failed")
# Server answers that a retry cures: a member shutting down or stepping down, a network error
# between members (MongoDB's retryable-writes specification lists these; PyMongo retries a write
# once on them, we retry for as long as it takes).
_RETRYABLE_CODES = frozenset({6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436})
# FerretDB answers a request it was serving when it stops (SIGTERM, a restart) with its Go
# context's cancellation as an InternalError (code 1), not with ShutdownInProgress.
_FERRETDB_INTERRUPTED = (1, "context canceled")


def connect(
    settings: Settings, *, app_name: str, timeout_ms: int = 5_000
) -> AsyncMongoClient[Document]:
    """A client of CT_MONGO_URI; a URI PyMongo cannot use raises Rejected (naming the setting,
    never showing the URI's secrets)."""
    try:
        return AsyncMongoClient(
            settings.mongo_uri.get_secret_value(),
            appname=app_name,
            tz_aware=True,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
        )
    except (ConfigurationError, ValueError, TypeError) as exc:
        raise Rejected(
            f"CT_MONGO_URI is not usable ({_without_secrets(settings, exc)}); it is "
            f"{settings.mongo_uri_shown}"
        ) from None


def explain(settings: Settings, exc: BaseException) -> Rejected | Unreachable | None:
    """A MongoDB failure that an operator must fix, as one line naming CT_MONGO_URI."""
    shown = f"CT_MONGO_URI={settings.mongo_uri_shown}"
    if isinstance(exc, OperationFailure) and exc.code == AUTHENTICATION_FAILED:
        return Rejected(f"MongoDB rejected the credentials in {shown}: fix the user or password")
    if isinstance(exc, ServerSelectionTimeoutError):
        reason = _without_secrets(settings, exc).split(", Timeout:")[0]
        reason = reason.split(" (configured timeouts")[0]
        if any(marker in str(exc) for marker in _CERTIFICATE_FAILURES):
            return Rejected(
                f"MongoDB's TLS certificate is not trusted ({reason}): set tlsCAFile in "
                f"{shown} to the CA that signed it (or fix the host name)"
            )
        return Unreachable(f"cannot reach MongoDB at {shown}: {reason}")
    return None


def _without_secrets(settings: Settings, exc: BaseException) -> str:
    text = str(exc)
    password = urlsplit(settings.mongo_uri.get_secret_value()).password
    return text.replace(password, "***") if password else text


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
    """Errors that a retry can cure: the server is down, restarting or unreachable. Not: an
    untrusted certificate, which PyMongo reports as a server selection timeout too."""
    if isinstance(exc, ServerSelectionTimeoutError) and any(
        marker in str(exc) for marker in _CERTIFICATE_FAILURES
    ):
        return False
    if type(exc) is OperationFailure:  # not its subclasses: a duplicate key is an answer
        code, message = exc.code, str(exc)
        return (
            code in _RETRYABLE_CODES
            or exc.has_error_label("RetryableWriteError")
            or (code == _FERRETDB_INTERRUPTED[0] and _FERRETDB_INTERRUPTED[1] in message)
        )
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
