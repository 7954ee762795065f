"""What the server behind the tests answers a lookup by a list of `_id`s with, in each dialect."""

from __future__ import annotations

import dataclasses

import pytest

from tests.support.commands import counted
from worker.adapters import mongo
from worker.adapters.dialect import FERRETDB, MONGODB, detect_dialect
from worker.core.config import Settings

pytestmark = pytest.mark.stack


async def test_the_workers_dialect_reads_a_list_of_ids_with_one_query(db: mongo.Database) -> None:
    dialect = await mongo.prepare(db)
    # MongoDB, and the local stack's FerretDB build, serve `{_id: {$in: [...]}}` from the index.
    assert dialect.in_pushdown, dialect
    explained = await db.command(
        "explain", {"find": "aliases", "filter": {"_id": {"$in": ["a", "b"]}}}
    )
    if dialect.name == "ferretdb":
        assert explained["filterPushdown"] is True
        assert "USING INDEX" in " ".join(explained["queryPlanner"]["Plan"])


async def test_on_a_database_without_the_probed_collection_ferretdb_is_read_id_by_id(
    db: mongo.Database,
) -> None:
    ferretdb = "ferretdbVersion" in await db.client.admin.command("buildInfo")
    # Nothing is assumed of a FerretDB build where nothing could be probed.
    assert await detect_dialect(db) is (FERRETDB if ferretdb else MONGODB)
    assert await detect_dialect(db, "ferretdb") is FERRETDB


@pytest.mark.parametrize("shape", ["id_by_id", "lists", "short_lists"])
async def test_each_dialect_finds_the_same_documents_in_the_rounds_it_promises(
    shape: str, settings: Settings, db: mongo.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    await db["things"].insert_many([{"_id": f"t-{k}", "k": k, "extra": "x"} for k in range(2500)])
    workers = await mongo.prepare(db)
    chosen = {
        "id_by_id": FERRETDB,
        "lists": workers,
        "short_lists": dataclasses.replace(workers, ids_per_query=700),
    }[shape]
    wanted = [f"t-{k}" for k in range(0, 2500, 2)] + ["t-0", "absent-1", "absent-2"]
    commands = counted(monkeypatch)
    client = mongo.connect(settings, app_name="ct-tests-dialect")
    try:
        things = client[settings.mongo_db]["things"]
        found = await chosen.find_each(things, "_id", wanted, {"extra": 0})
    finally:
        await client.close()
    assert sorted(d["k"] for d in found) == list(range(0, 2500, 2))  # each once
    assert all("extra" not in d for d in found)
    distinct = len(wanted) - 1
    rounds = -(-distinct // chosen.ids_per_query) if chosen.in_pushdown else distinct
    assert commands.sent["find", "things"] == rounds
    assert shape != "short_lists" or rounds == 2


async def test_a_list_whose_every_id_is_found_needs_no_get_more(
    settings: Settings, db: mongo.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first batch exactly as long as the list leaves the cursor open: one more round trip
    (getMore) only to learn that nothing follows, on every poll of the notifier."""
    await db["things"].insert_many([{"_id": f"t-{k}"} for k in range(300)])
    workers = await mongo.prepare(db)
    commands = counted(monkeypatch)
    client = mongo.connect(settings, app_name="ct-tests-dialect")
    try:
        found = await workers.find_each(
            client[settings.mongo_db]["things"], "_id", [f"t-{k}" for k in range(300)]
        )
    finally:
        await client.close()
    assert len(found) == 300
    assert commands.of("getMore") == {}
