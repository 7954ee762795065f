"""Retention: what is kept expires, one audited run at a time (`ct retention run`, and daily).

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
from worker.adapters.subject_keys import SubjectKeys
from worker.domain.aliases import Clock

log = structlog.get_logger(__name__)
ACTION: Final = "retention.run"
DAILY_S: Final = 24 * 3600.0


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


async def run_daily(retention: Retention, *, operator: str) -> None:
    """A run now and then every day, until cancelled; a failed run is logged and retried then."""
    while True:
        try:
            await retention.run(operator=operator)
        except Exception:
            log.exception("retention_failed")
        await asyncio.sleep(DAILY_S)
