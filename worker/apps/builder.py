"""One way to build the stores: every worker and command gets them from here, from the settings.

A store built in two places drifts (the console once lacked the alias grace period the workers
had); here each is built once per process and database, with the settings that shape it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from worker.adapters.alias_store import AliasStore
from worker.adapters.audit import AuditLog
from worker.adapters.deliveries import DeliveryLedger
from worker.adapters.dialect import Dialect
from worker.adapters.messages import MessageStore
from worker.adapters.mongo import Database
from worker.adapters.schedules import Schedules
from worker.adapters.stores import StoreSettings
from worker.adapters.subject_keys import SubjectKeys
from worker.adapters.suppressions import Suppressions
from worker.core.config import Settings
from worker.core.crypto import AddressCipher
from worker.domain.aliases import Clock, SystemClock
from worker.services.retention import Retention
from worker.services.subject_requests import SubjectRequests
from worker.services.subjects import Subjects
from worker.services.suppression import CustomerSuppression


@dataclass(frozen=True)
class Stores:
    """The MongoDB-backed stores of one process, each built on first use and then shared."""

    db: Database
    dialect: Dialect
    settings: Settings
    cipher: AddressCipher
    clock: Clock = field(default_factory=SystemClock)
    # Workers keep recently used orders' aliases in memory; the console and `ct` read afresh,
    # so that what an operator sees is what is stored now.
    cache_aliases: bool = True

    @cached_property
    def aliases(self) -> AliasStore:
        s = self.settings
        return AliasStore(
            self.db, self.cipher, domain=s.domain, ttl_days=s.alias_ttl_days, clock=self.clock,
            dialect=self.dialect, cache_size=self._cache_size, grace_days=s.alias_grace_days,
            subject_keys=self.subject_keys,
        )  # fmt: skip

    @cached_property
    def messages(self) -> MessageStore:
        return MessageStore(
            self.db, self.cipher, retention_days=self.settings.message_retention_days,
            clock=self.clock, dialect=self.dialect, subject_keys=self.subject_keys,
        )  # fmt: skip

    @cached_property
    def subject_keys(self) -> SubjectKeys:
        size, dialect = self._cache_size, self.dialect
        return SubjectKeys(self.db, self.cipher, clock=self.clock, cache_size=size, dialect=dialect)

    @property
    def _cache_size(self) -> int:
        """Orders (and their customers' keys) a worker remembers: at least two polls' worth,
        because a poll's orders are read together before its events run, and a cache smaller
        than the poll would forget the first ones before their events ask."""
        s = self.settings
        if not self.cache_aliases or not s.alias_cache_size:
            return 0
        return max(s.alias_cache_size, 2 * s.batch_max_records)

    @cached_property
    def subjects(self) -> Subjects:
        """Seals and opens personal fields of timeline events per data subject."""
        return Subjects(self.subject_keys, self.aliases)

    @cached_property
    def suppressions(self) -> Suppressions:
        return Suppressions(self.db, self.dialect, store_wide=self.settings.bounce_suppress_store)

    @cached_property
    def suppression(self) -> CustomerSuppression:
        """The one owner of suppression, over the records above."""
        return CustomerSuppression(
            self.suppressions, self.aliases, store_wide=self.settings.bounce_suppress_store
        )

    @cached_property
    def ledger(self) -> DeliveryLedger:
        return DeliveryLedger(self.db, dialect=self.dialect, messages=self.messages)

    @cached_property
    def audit(self) -> AuditLog:
        return AuditLog(self.db)

    @cached_property
    def store_settings(self) -> StoreSettings:
        return StoreSettings(self.db)

    @cached_property
    def subject_requests(self) -> SubjectRequests:
        """A person's export and erasure."""
        return SubjectRequests(
            db=self.db, subjects=self.subjects, aliases=self.aliases, messages=self.messages,
            suppression=self.suppression, audit=self.audit, clock=self.clock,
        )  # fmt: skip

    @cached_property
    def schedules(self) -> Schedules:
        return Schedules(self.db)

    @cached_property
    def retention(self) -> Retention:
        return Retention(
            messages=self.messages, keys=self.subject_keys, aliases=self.aliases,
            audit=self.audit, clock=self.clock,
            subject_retention_days=self.settings.subject_retention_days,
        )  # fmt: skip
