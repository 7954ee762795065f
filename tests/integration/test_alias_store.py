"""Aliases in the real database: formats, store mask choice, races, expiry, encryption at rest."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from datetime import UTC, datetime, timedelta

import bson
import pytest

from tests.conftest import REPO
from tests.support.clock import MovableClock
from worker.adapters import mongo
from worker.adapters.alias_store import AliasStore
from worker.adapters.alias_writes import NewOrder
from worker.adapters.dialect import Dialect
from worker.adapters.stores import StoreSettings
from worker.adapters.subject_keys import SubjectKeys
from worker.contracts.events import ParticipantRole
from worker.core.config import Settings
from worker.core.crypto import AddressCipher
from worker.domain.aliases import AliasExpiry, MaskType, Party

pytestmark = pytest.mark.stack
HARD = re.compile(r"^[0-9a-f]{32}@ct\.example\.com$")
CUSTOMER = Party("johndoe@example.com", "John Doe")
STORE = Party("sales@shop.example.net", "Shop")


def _store(
    db: mongo.Database,
    dialect: Dialect,
    settings: Settings,
    clock: MovableClock | None = None,
    *,
    cache_size: int = 0,
) -> AliasStore:
    return AliasStore(
        db,
        AddressCipher(settings.data_keys()),
        domain=settings.domain,
        ttl_days=settings.alias_ttl_days,
        clock=clock or MovableClock(),
        dialect=dialect,
        cache_size=cache_size,
    )


async def test_a_store_is_hard_masked_until_it_says_otherwise(
    dialect: Dialect, settings: Settings, db: mongo.Database
) -> None:
    await mongo.ensure_indexes(db)
    customer, store = await _store(db, dialect, settings).order_pair(
        "o-1", "store-h", CUSTOMER, STORE
    )
    assert HARD.match(customer.address)
    assert HARD.match(store.address)
    assert customer.mask == store.mask == MaskType.HARD
    assert (customer.role, store.role) == (ParticipantRole.CUSTOMER, ParticipantRole.STORE)
    assert customer.real_address == "johndoe@example.com"


async def test_soft_after_ct_store_set_mask_and_existing_orders_keep_their_aliases(
    dialect: Dialect, settings: Settings, db: mongo.Database
) -> None:
    await mongo.ensure_indexes(db)
    aliases = _store(db, dialect, settings)
    before, _ = await aliases.order_pair("o-old", "store-s", CUSTOMER, STORE)

    env = {**os.environ, "CT_MONGO_DB": settings.mongo_db}
    result = subprocess.run(
        [str(REPO / ".venv/bin/ct"), "store", "set-mask", "store-s", "soft"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    assert "reversible" in result.stderr
    shown = subprocess.run(
        [str(REPO / ".venv/bin/ct"), "store", "show", "store-s"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    assert "mask: soft" in shown.stdout

    customer, store = await aliases.order_pair("o-new", "store-s", CUSTOMER, STORE)
    match = re.fullmatch(r"johndoe@example\.com-([0-9a-f]{13})\.ct\.example\.com", customer.address)
    assert match, customer.address
    assert store.address == f"sales@shop.example.net-{match.group(1)}.ct.example.com"
    again, _ = await aliases.order_pair("o-old", "store-s", CUSTOMER, STORE)
    assert again.address == before.address and HARD.match(again.address)


@pytest.mark.parametrize("cache_size", [0, 64])
async def test_fifty_concurrent_events_of_one_order_on_two_workers_make_one_alias_pair(
    dialect: Dialect, settings: Settings, db: mongo.Database, cache_size: int
) -> None:
    await mongo.ensure_indexes(db)
    workers = [_store(db, dialect, settings, cache_size=cache_size) for _ in range(2)]
    pairs = await asyncio.gather(
        *[workers[i % 2].order_pair("o-race", "store-r", CUSTOMER, STORE) for i in range(50)]
    )
    assert len({(c.address, s.address) for c, s in pairs}) == 1
    assert await db["aliases"].count_documents({"orderId": "o-race"}) == 2


async def test_a_cached_absence_cannot_make_a_second_pair_for_an_order(
    dialect: Dialect, settings: Settings, db: mongo.Database
) -> None:
    """Worker A remembers that the order had no aliases; worker B then creates them. A must
    still end up with B's pair, not a second one."""
    await mongo.ensure_indexes(db)
    late, early = (
        _store(db, dialect, settings, cache_size=64),
        _store(db, dialect, settings, cache_size=64),
    )
    assert await late.of_order("o-cached") == []
    made = await early.order_pair("o-cached", "store-c", CUSTOMER, STORE)
    found = await late.order_pair("o-cached", "store-c", CUSTOMER, STORE)
    assert [a.address for a in found] == [a.address for a in made]
    assert await db["aliases"].count_documents({"orderId": "o-cached"}) == 2
    assert [a.address for a in await late.of_order("o-cached")] == [a.address for a in made]
    assert await late.lookup(made[0].address.upper()) == made[0]


async def test_an_alias_stops_working_after_its_validity(
    dialect: Dialect, settings: Settings, db: mongo.Database
) -> None:
    await mongo.ensure_indexes(db)
    clock = MovableClock()
    customer, _ = await _store(db, dialect, settings, clock).order_pair(
        "o-exp", "store-e", CUSTOMER, STORE
    )
    found = await _store(db, dialect, settings, clock).lookup(customer.address)
    assert found is not None and not found.expired(clock.now())
    clock.advance(timedelta(days=settings.alias_ttl_days) - timedelta(seconds=1))
    assert not found.expired(clock.now())
    clock.advance(timedelta(seconds=1))
    assert found.expired(clock.now())


async def test_a_raw_dump_of_the_aliases_collection_holds_no_real_address(
    dialect: Dialect, settings: Settings, db: mongo.Database
) -> None:
    await mongo.ensure_indexes(db)
    aliases = _store(db, dialect, settings)
    await aliases.order_pair("o-dump", "store-d", CUSTOMER, STORE)
    await aliases.reverse_alias("o-dump", Party("tracking@carrier.example", "Carrier"))
    raw = b"".join([bson.encode(d) async for d in db["aliases"].find({})])
    for address in (CUSTOMER.address, STORE.address, "tracking@carrier.example"):
        assert address.encode() not in raw
        assert address.split("@")[0].encode() not in raw
    assert await db["aliases"].count_documents({}) == 3


async def test_a_reverse_alias_is_created_once_per_order_and_sender(
    dialect: Dialect, settings: Settings, db: mongo.Database
) -> None:
    await mongo.ensure_indexes(db)
    aliases = _store(db, dialect, settings)
    await aliases.order_pair("o-rev", "store-v", CUSTOMER, STORE)
    carrier = Party("tracking@carrier.example", "Carrier")
    first, second = await asyncio.gather(
        aliases.reverse_alias("o-rev", carrier), aliases.reverse_alias("o-rev", carrier)
    )
    assert first.address == second.address
    assert first.role == ParticipantRole.EXTERNAL
    assert first.real_address == "tracking@carrier.example"
    other = await aliases.reverse_alias("o-rev", Party("ops@marketplace.example", None))
    assert other.address != first.address


async def test_a_status_event_that_moves_no_window_writes_nothing(
    dialect: Dialect, settings: Settings, db: mongo.Database
) -> None:
    await mongo.ensure_indexes(db)
    await StoreSettings(db).update("store-w", alias_expiry=AliasExpiry.ORDER_FLOW)
    aliases = _store(db, dialect, settings)
    at = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    first = await aliases.follow_status("o-win", "store-w", terminal=False, at=at)
    assert first is not None
    # Mark the document: any write of the window would set storeId back.
    await db["alias_windows"].update_one({"_id": "o-win"}, {"$set": {"storeId": "untouched"}})
    for terminal, when in ((False, at), (False, at - timedelta(hours=1))):  # redelivery, older
        assert await aliases.follow_status("o-win", "store-w", terminal=terminal, at=when) == first
    doc = await db["alias_windows"].find_one({"_id": "o-win"})
    assert doc is not None and doc["storeId"] == "untouched"
    closed = await aliases.follow_status("o-win", "store-w", terminal=True, at=at)
    assert closed is not None and closed.closed  # the same instant, but it closes: written
    doc = await db["alias_windows"].find_one({"_id": "o-win"})
    assert doc is not None and doc["storeId"] == "store-w" and doc["closed"] is True
    fixed = await aliases.follow_status("o-fix", "store-f", terminal=True, at=at)
    assert fixed is None and await db["alias_windows"].find_one({"_id": "o-fix"}) is None


async def test_a_polls_orders_are_read_together_and_a_window_move_updates_what_is_remembered(
    dialect: Dialect, settings: Settings, db: mongo.Database
) -> None:
    await mongo.ensure_indexes(db)
    await StoreSettings(db).update("store-p", alias_expiry=AliasExpiry.ORDER_FLOW)
    writer = _store(db, dialect, settings)
    pairs = {o: await writer.order_pair(o, "store-p", CUSTOMER, STORE) for o in ("o-p1", "o-p2")}
    reader = _store(db, dialect, settings, cache_size=100)
    await reader.prefetch(["o-p1", "o-p2", "o-p3"])
    # Gone from the database now: only what prefetch remembered can answer.
    await db["aliases"].delete_many({"orderId": {"$in": ["o-p1", "o-p2"]}})
    for order_id, pair in pairs.items():
        assert await reader.order_pair(order_id, "store-p", CUSTOMER, STORE) == pair
    new_customer, _ = await reader.order_pair("o-p3", "store-p", CUSTOMER, STORE)  # had none
    assert new_customer.order_id == "o-p3" and await db["aliases"].count_documents({}) == 2
    at = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    window = await reader.follow_status("o-p1", "store-p", terminal=True, at=at)
    assert window is not None
    customer, store = await reader.order_pair("o-p1", "store-p", CUSTOMER, STORE)
    assert customer.expires_at == store.expires_at == window.expires_at
    assert customer.address == pairs["o-p1"][0].address


async def test_a_polls_new_orders_are_made_together_and_racing_workers_agree_on_each_pair(
    dialect: Dialect, settings: Settings, db: mongo.Database
) -> None:
    await mongo.ensure_indexes(db)
    await StoreSettings(db).update("store-soft", mask=MaskType.SOFT)
    orders = {
        f"o-b{k}": NewOrder(
            "store-soft" if k % 2 else "store-hard",
            Party(f"buyer{k}@example.com", f"Buyer {k}"),
            STORE,
        )
        for k in range(6)
    }
    known = await _store(db, dialect, settings).order_pair("o-b0", "store-hard", CUSTOMER, STORE)
    first, second = (_store(db, dialect, settings, cache_size=100) for _ in range(2))
    # Two workers given the same poll at once: every order gets one pair, theirs or ours.
    await asyncio.gather(first.prepare_orders(orders), second.prepare_orders(orders))
    assert await db["aliases"].count_documents({}) == 12
    assert await db["alias_keys"].count_documents({}) == 12
    for order_id, new in orders.items():
        pair = await _store(db, dialect, settings).order_pair(
            order_id, new.store_id, new.customer, new.store
        )  # what the database holds
        for worker in (first, second):
            assert await worker.order_pair(order_id, new.store_id, new.customer, new.store) == pair
        customer, store = pair
        if order_id == "o-b0":
            assert pair == known  # an order that had its aliases keeps them
            continue
        if new.store_id == "store-soft":
            assert customer.address.startswith(f"{new.customer.address}-")
            assert customer.token and customer.token == store.token  # one order, one token
        else:
            assert HARD.match(customer.address) and HARD.match(store.address)
        assert customer.real_address == new.customer.address
    assert await db["aliases"].count_documents({}) == 12  # order_pair made nothing more


async def test_a_polls_new_customers_get_one_subject_key_each_even_when_workers_race(
    dialect: Dialect, settings: Settings, db: mongo.Database
) -> None:
    await mongo.ensure_indexes(db)
    cipher = AddressCipher(settings.data_keys())
    buyers = [Party(f"buyer{k}@example.com", f"Buyer {k}") for k in range(5)]
    orders = {f"o-s{k}": NewOrder("store-1", buyer, STORE) for k, buyer in enumerate(buyers)}

    def worker() -> AliasStore:
        keys = SubjectKeys(db, cipher, clock=MovableClock(), cache_size=100, dialect=dialect)
        return AliasStore(
            db, cipher, domain=settings.domain, ttl_days=settings.alias_ttl_days,
            clock=MovableClock(), dialect=dialect, cache_size=100, subject_keys=keys,
        )  # fmt: skip

    first, second = worker(), worker()
    await asyncio.gather(first.prepare_orders(orders), second.prepare_orders(orders))
    assert await db["subject_ids"].count_documents({}) == 5
    assert await db["subjects"].count_documents({}) == 5  # the losers' keys were removed
    reader = worker()  # nothing cached: opens what the database holds
    for order_id, new in orders.items():
        customer, _ = await reader.order_pair(order_id, new.store_id, new.customer, new.store)
        assert (customer.real_address, customer.name) == (new.customer.address, new.customer.name)
    stored = await db["aliases"].find_one({"role": "CUSTOMER", "orderId": "o-s0"})
    assert stored is not None and stored["subjectId"] and stored["realEnc"] is None
