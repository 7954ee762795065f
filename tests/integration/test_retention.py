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
from worker.adapters.schedules import CLAIMS_KEPT, Schedules
from worker.apps.builder import Stores
from worker.core.config import Settings
from worker.core.crypto import AddressCipher
from worker.domain.aliases import Party
from worker.domain.scope import PLATFORM
from worker.services.retention import (
    ACTION,
    EVERY,
    JOB,
    RETRY_AFTER,
    RetentionRun,
    run_if_due,
)

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


async def test_a_jobs_run_is_claimed_by_one_of_the_processes_that_try_and_only_when_due(
    db: mongo.Database,
) -> None:
    schedules, at = Schedules(db), datetime(2026, 1, 1, tzinfo=UTC)
    assert await schedules.due_at("job") is None  # never ran: due

    # Three replicas at once, on a job that never ran: one wins.
    tries = [schedules.claim("job", now=at, every=timedelta(days=1)) for _ in range(3)]
    assert sorted(await asyncio.gather(*tries)) == [False, False, True]
    assert await schedules.due_at("job") == at + timedelta(days=1)
    # Not due: nobody runs it, not a restarted process either.
    assert not await schedules.claim("job", now=at + timedelta(hours=23), every=timedelta(days=1))
    # Due again: three at once, one wins.
    later = at + timedelta(days=1)
    tries = [schedules.claim("job", now=later, every=timedelta(days=1)) for _ in range(3)]
    assert sorted(await asyncio.gather(*tries)) == [False, False, True]
    await schedules.defer("job", until=later + timedelta(hours=1))
    assert await schedules.claim("job", now=later + timedelta(hours=1), every=timedelta(days=1))
    assert await schedules.due_at("other") is None  # each job its own


async def test_a_jobs_old_claims_are_deleted_by_its_later_runs_and_no_other_jobs(
    db: mongo.Database,
) -> None:
    schedules, at, day = Schedules(db), datetime(2026, 1, 1, tzinfo=UTC), timedelta(days=1)
    assert await schedules.claim("other", now=at, every=day)
    for n in range(10):
        assert await schedules.claim("job", now=at + n * day, every=day)
    # The last run deleted its job's claims older than CLAIMS_KEPT (a week): the first two.
    runs, last = [at + n * day for n in range(10)], at + 9 * day
    kept = await db["schedule_claims"].find({"job": "job"}).to_list()
    assert sorted(c["claimedAt"] for c in kept) == [r for r in runs if r >= last - CLAIMS_KEPT]
    assert len(kept) == 8
    assert await db["schedule_claims"].count_documents({"job": "other"}) == 1
    # What a deleted claim named is behind the due time: it cannot be claimed again.
    assert not await schedules.claim("job", now=at + 9 * day, every=day)


async def test_notifiers_run_retention_once_a_day_for_the_deployment_whatever_they_restart(
    settings: Settings, db: mongo.Database, dialect: Dialect
) -> None:
    """Each notifier checks `run_if_due` (at its start, then hourly): two replicas and a
    restart of one make one run a day, and the day after, one more."""
    clock = MovableClock(datetime.now(UTC).replace(microsecond=0))  # as stored: ms
    stores = Stores(db, dialect, settings, AddressCipher(settings.data_keys()), clock)

    async def replicas_check(count: int) -> int:
        checks = [
            run_if_due(stores.retention, stores.schedules, clock=clock, operator="tests")
            for _ in range(count)
        ]
        return sum(done is not None for done in await asyncio.gather(*checks))

    assert await replicas_check(2) == 1
    clock.advance(timedelta(hours=1))
    assert await replicas_check(1) == 0  # a restart, an hour later
    clock.advance(EVERY)
    assert await replicas_check(2) == 1
    assert await db["audit"].count_documents({"action": ACTION}) == 2
    assert await stores.schedules.due_at(JOB) == clock.now() + EVERY


async def test_a_failed_retention_run_is_tried_again_within_the_hour_not_the_next_day(
    settings: Settings, db: mongo.Database, dialect: Dialect, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = MovableClock(datetime.now(UTC).replace(microsecond=0))  # as stored: ms
    stores = Stores(db, dialect, settings, AddressCipher(settings.data_keys()), clock)

    async def broken(*, operator: str) -> RetentionRun:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(stores.retention, "run", broken)
    with pytest.raises(RuntimeError):
        await run_if_due(stores.retention, stores.schedules, clock=clock, operator="tests")
    assert await stores.schedules.due_at(JOB) == clock.now() + RETRY_AFTER
    monkeypatch.undo()
    clock.advance(RETRY_AFTER)
    assert await run_if_due(stores.retention, stores.schedules, clock=clock, operator="tests")
