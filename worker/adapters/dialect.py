"""What the MongoDB-wire server behind CT_MONGO_URI does well: one object, chosen at start.

The adapters run on MongoDB 7/8 and on FerretDB v1 (SQLite backend, the local stack). FerretDB
answers every query MongoDB does, but some of them at a cost that grows with the collection, so
each adapter asks its `Dialect` which form to use instead of knowing which server it talks to.
The domain knows nothing of this. Detected from `buildInfo` (FerretDB names itself there), or
set with CT_MONGO_DIALECT=mongodb|ferretdb.

One choice is deliberately the same on both: an order's aliases are claimed by `_id` in the
`alias_keys` collection (see alias_store.py). It is the only race-free get-or-create FerretDB
has without transactions, it is correct on MongoDB too, and a data layout that does not depend
on the server keeps a move from FerretDB to MongoDB a plain dump and restore.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

Document = dict[str, Any]

DialectName = Literal["mongodb", "ferretdb"]
READ_CONCURRENCY: Final = 32
DUPLICATE_KEY: Final = 11000


@dataclass(frozen=True, slots=True)
class Dialect:
    name: DialectName
    # `{_id: {"$in": [...]}}` served by the _id index. Stock FerretDB v1 on SQLite pushes only
    # `{_id: value}` down to SQLite (about 1 ms at 30,000 documents) and evaluates `$in` by
    # scanning the collection (about 700 ms there, growing with it). The local stack's build
    # pushes lists of up to 1,000 _ids down too (deploy/local/ferretdb-sqlite-id-index.patch):
    # `detect_dialect` asks the server's `explain` which of the two it is talking to.
    in_pushdown: bool
    # The most _ids one `$in` carries; a longer list is split.
    ids_per_query: int
    # Updates conditional on fields besides `_id` are atomic and indexed. FerretDB v1 pushes a
    # filter down only when it is exactly {_id: value}, and evaluates the rest as a non-atomic
    # read-modify-write: a guard scans the collection there and guards nothing.
    guarded_updates: bool
    # FerretDB v1 holds one SQLite connection per matched update until the whole command ends,
    # from a pool of 100: a bulk_write with 100 or more updates of existing documents never
    # answers and wedges that database until FerretDB restarts. The local stack's build fixes
    # that (deploy/local/ferretdb-sqlite-id-index.patch); a FerretDB v1 from elsewhere has it.
    writes_per_command: int

    async def find_each(
        self,
        collection: AsyncCollection[Document],
        field: str,
        values: Iterable[Any],
        projection: Mapping[str, Any] | None = None,
    ) -> list[Document]:
        """The documents whose `field` equals one of `values`, in whichever form is fast here:
        one `$in` query per `ids_per_query` values, or one equality read per value, concurrently.
        Every caller looks up by `_id`, the one field whose `$in` FerretDB can push down."""
        wanted = list(dict.fromkeys(values))
        if not wanted:
            return []
        if self.in_pushdown:
            found: list[Document] = []
            for start in range(0, len(wanted), self.ids_per_query):
                chunk = wanted[start : start + self.ids_per_query]
                query = {field: {"$in": chunk}}
                # All in the first batch, and one place more: a batch filled exactly leaves
                # the cursor open, and a getMore would go only to learn that nothing follows.
                cursor = collection.find(query, projection, batch_size=len(chunk) + 1)
                found += await cursor.to_list()
            return found
        slots = asyncio.Semaphore(READ_CONCURRENCY)

        async def one(value: Any) -> list[Document]:
            async with slots:
                return await collection.find({field: value}, projection).to_list()

        each = await asyncio.gather(*(one(v) for v in wanted))
        return [doc for docs in each for doc in docs]


MONGODB: Final = Dialect(
    "mongodb", in_pushdown=True, ids_per_query=10_000, guarded_updates=True, writes_per_command=500
)
# Stock FerretDB v1, and what CT_MONGO_DIALECT=ferretdb chooses: nothing assumed of the build.
FERRETDB: Final = Dialect(
    "ferretdb", in_pushdown=False, ids_per_query=1, guarded_updates=False, writes_per_command=50
)
# A build whose `explain` says it pushes `{_id: {$in: [...]}}` down (the local stack's).
FERRETDB_ID_LISTS: Final = dataclasses.replace(FERRETDB, in_pushdown=True, ids_per_query=1_000)
# Made at start-up by mongo.ensure_indexes: FerretDB explains a query on a collection that does
# not exist yet as pushing nothing down, so on a fresh database the probe picks FERRETDB.
PROBE_COLLECTION: Final = "aliases"
DIALECTS: Final[dict[str, Dialect]] = {d.name: d for d in (MONGODB, FERRETDB)}


def dialect_of(build_info: Mapping[str, Any]) -> Dialect:
    """FerretDB names itself in buildInfo; MongoDB does not."""
    return FERRETDB if "ferretdbVersion" in build_info else MONGODB


async def detect_dialect(
    db: AsyncDatabase[Document], override: DialectName | None = None
) -> Dialect:
    """The override when one is set, else what the server says it is."""
    if override is not None:
        return DIALECTS[override]
    dialect = dialect_of(await db.client.admin.command("buildInfo"))
    if dialect is FERRETDB and await _pushes_down_id_lists(db):
        return FERRETDB_ID_LISTS
    return dialect


async def _pushes_down_id_lists(db: AsyncDatabase[Document]) -> bool:
    query = {"find": PROBE_COLLECTION, "filter": {"_id": {"$in": ["probe-1", "probe-2"]}}}
    return (await db.command("explain", query)).get("filterPushdown") is True


async def insert_each(collection: AsyncCollection[Document], docs: list[Document]) -> set[Any]:
    """Insert these documents in one unordered command (the same on both servers); the `_id`s
    that went in. A duplicate key refuses only its own document: the race rules of a one-at-a-
    time insert hold per document, for the caller to apply to the refused ones."""
    if not docs:
        return set()
    try:
        await collection.insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if not errors or any(e.get("code") != DUPLICATE_KEY for e in errors):
            raise
        refused = {docs[e["index"]]["_id"] for e in errors}
        return {d["_id"] for d in docs} - refused
    return {d["_id"] for d in docs}
