"""Retention against the real database: kept messages expire, subjects of old orders are
shredded when CT_SUBJECT_RETENTION_DAYS says so, one audit entry per run; `ct retention run`."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import REPO
from tests.helpers import settings_env
from tests.support.clock import MovableClock
from worker.adapters import mongo
from worker.adapters.dialect import Dialect
from worker.apps.builder import Stores
from worker.core.config import Settings
from worker.core.crypto import AddressCipher
from worker.domain.aliases import Party
from worker.domain.scope import PLATFORM
from worker.services.retention import ACTION

pytestmark = pytest.mark.stack


async def _person(stores: Stores, order_id: str, email: str) -> str:
    await stores.aliases.order_pair(
        order_id, "store-1", Party(email, "Old Customer"), Party("orders@shop.example.com", "Shop")
    )
    key = await stores.subject_keys.for_address(email)
    assert key is not None
    assert await stores.messages.keep(
        event_id=f"e-{order_id}", order_id=order_id, store_id="store-1",
        raw=b"Subject: old\r\n\r\nold body", subject_id=key.subject_id,
    )  # fmt: skip
    return key.subject_id


async def test_a_run_purges_old_messages_and_shreds_subjects_whose_every_order_is_old(
    settings: Settings, db: mongo.Database, dialect: Dialect
) -> None:
    clock = MovableClock(datetime.now(UTC))
    kept = settings.model_copy(update={"subject_retention_days": 400})
    stores = Stores(db, dialect, kept, AddressCipher(kept.data_keys()), clock, cache_aliases=False)
    run = uuid.uuid4().hex[:8]
    old = await _person(stores, f"o-old-{run}", f"old.{run}@example.org")
    clock.advance(timedelta(days=300))
    recent = await _person(stores, f"o-recent-{run}", f"recent.{run}@example.org")
    # One of hers is old, one recent: she stays.
    both = await _person(stores, f"o-both-new-{run}", f"old.{run}@example.org")
    assert both == old
    clock.advance(timedelta(days=150))

    done = await stores.retention.run(operator="tests")

    assert done.messages_purged == 3  # all past 60 days
    assert done.subjects_shredded == 0  # the old customer's newest order is 150 days old
    clock.advance(timedelta(days=300))
    done = await stores.retention.run(operator="tests")
    assert done.subjects_shredded == 2
    for subject_id in (old, recent):
        assert await stores.subject_keys.key(subject_id) is None
    assert [a.real_address for a in await stores.aliases.of_person(f"old.{run}@example.org")] == [
        "", ""
    ]  # fmt: skip
    entries, _ = await stores.audit.page(scope=PLATFORM, action=ACTION)
    assert [(e.detail["messages"], e.detail["subjects"]) for e in entries] == [(0, 2), (3, 0)]


async def test_ct_retention_run_keeps_subjects_when_no_retention_is_set(
    settings: Settings, db: mongo.Database
) -> None:
    done = await asyncio.to_thread(
        subprocess.run, [str(REPO / ".venv" / "bin" / "ct"), "retention", "run"],
        capture_output=True, text=True, env=settings_env(settings), timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "0 kept message(s) past 60 days deleted" in done.stdout
    assert "kept until erased (CT_SUBJECT_RETENTION_DAYS is not set)" in done.stdout
    assert await db["audit"].count_documents({"action": ACTION}) == 1
