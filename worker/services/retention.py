"""Retention: what is kept expires, one audited run at a time (`ct retention run`, and daily:
once a day for the whole deployment, whichever notifier claims it, see `run_when_due`).

A run deletes kept messages past CT_MESSAGE_RETENTION_DAYS (what a bounce still needs stays until
its bounce address expires, see MessageStore.purge_expired) and, when CT_SUBJECT_RETENTION_DAYS
is set, shreds the subject key of every person whose every order is older than that: their
timeline entries read `erased` from then on, on Kafka too, and their aliases lose the address.
One audit entry per run says what it did.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

import structlog

from worker.adapters.alias_store import AliasStore
from worker.adapters.audit import AuditLog
from worker.adapters.messages import MessageStore
from worker.adapters.schedules import Schedules
from worker.adapters.subject_keys import SubjectKeys
from worker.domain.aliases import Clock

log = structlog.get_logger(__name__)
ACTION: Final = "retention.run"
JOB: Final = "retention"
EVERY: Final = timedelta(days=1)
# A failed run is tried again this much later, not a day later.
RETRY_AFTER: Final = timedelta(hours=1)
# How often a notifier looks whether the day's run is due: it runs within this of its time.
CHECK_S: Final = 3600.0


@dataclass(frozen=True, slots=True)
class RetentionRun:
    messages_purged: int
    subjects_shredded: int
    subject_retention_days: int | None


class Retention:
    def __init__(
        self,
        *,
        messages: MessageStore,
        keys: SubjectKeys,
        aliases: AliasStore,
        audit: AuditLog,
        clock: Clock,
        subject_retention_days: int | None,
    ) -> None:
        self._messages = messages
        self._keys = keys
        self._aliases = aliases
        self._audit = audit
        self._clock = clock
        self._subject_days = subject_retention_days

    async def run(self, *, operator: str) -> RetentionRun:
        purged = await self._messages.purge_expired()
        shredded = 0
        if self._subject_days is not None:
            cutoff = self._clock.now() - timedelta(days=self._subject_days)
            latest = await self._aliases.latest_customer_alias()
            for subject, address in await self._keys.live():
                newest = latest.get(self._keys.address_hash(address), subject.created_at)
                if newest < cutoff and subject.created_at < cutoff:
                    await self._keys.erase(subject.subject_id)
                    await self._aliases.erase_person(address)
                    shredded += 1
        done = RetentionRun(purged, shredded, self._subject_days)
        await self._audit.record(
            ACTION, operator=operator, store=None, messages=purged, subjects=shredded,
            subjectRetentionDays=self._subject_days,
        )  # fmt: skip
        log.info("retention_run", messages=purged, subjects=shredded)
        return done


async def run_when_due(
    retention: Retention,
    schedules: Schedules,
    *,
    clock: Clock,
    operator: str,
    check_s: float = CHECK_S,
) -> None:
    """Until cancelled, every `check_s`: the deployment's daily run, if it is due and this
    process claims it (so one replica runs it, and a restart does not run it again). A failure
    is logged and the run tried again RETRY_AFTER later."""
    while True:
        try:
            await run_if_due(retention, schedules, clock=clock, operator=operator)
        except Exception:
            log.exception("retention_failed")
        await asyncio.sleep(check_s)


async def run_if_due(
    retention: Retention, schedules: Schedules, *, clock: Clock, operator: str
) -> RetentionRun | None:
    """The deployment's run if it is due and this caller claims it; None: not this time."""
    if not await schedules.claim(JOB, now=clock.now(), every=EVERY):
        return None
    try:
        return await retention.run(operator=operator)
    except Exception:
        await schedules.defer(JOB, until=clock.now() + RETRY_AFTER)
        raise
