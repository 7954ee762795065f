"""A data subject's requests (LGPD art. 18, GDPR art. 15 and 17): a copy of their data, erasure.

`export` gathers everything held about one person, found by the keyed hash of their address:
their aliases, their orders with every timeline entry opened, the kept messages of those orders
(headers, text, attachment list) and their suppressions, as one JSON-ready document. `erase`
destroys every key the person ever had as a subject (so whatever was sealed under them, on Kafka
and in every copy, stays unreadable), and deletes what is kept otherwise: the aliases' real
addresses and names, the kept messages of their orders, their suppressions. Both are audited;
the audit entry of an erasure holds the keyed hash only. Erasing twice is one erasure.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from worker.adapters.alias_store import AliasRecord, AliasStore
from worker.adapters.audit import AuditLog
from worker.adapters.messages import MessageStore
from worker.adapters.mongo import Database
from worker.adapters.order_queries import OrderQueries
from worker.adapters.subject_keys import SubjectRecord
from worker.contracts.events import ParticipantRole
from worker.domain.aliases import Clock, InvalidAddress, normalize_address
from worker.domain.mime_view import view_message
from worker.domain.scope import PLATFORM, Scope
from worker.services.subjects import Subjects
from worker.services.suppression import CustomerSuppression
from worker.services.timeline import get_timeline

EXPORTED: Final = "subject.export"
ERASED: Final = "subject.erase"


@dataclass(frozen=True, slots=True)
class Erasure:
    address_hash: str
    subjects_erased: int  # keys destroyed by this request (0: erased before)
    aliases: int
    orders: int
    messages_deleted: int
    suppressions_lifted: int

    @property
    def already(self) -> bool:
        return not (self.subjects_erased or self.aliases or self.messages_deleted)


class SubjectRequests:
    def __init__(
        self,
        *,
        db: Database,
        subjects: Subjects,
        aliases: AliasStore,
        messages: MessageStore,
        suppression: CustomerSuppression,
        audit: AuditLog,
        clock: Clock,
    ) -> None:
        self._db = db
        self._subjects = subjects
        self._aliases = aliases
        self._messages = messages
        self._suppression = suppression
        self._audit = audit
        self._clock = clock

    async def export(
        self, email: str, *, reason: str, operator: str, scope: Scope = PLATFORM
    ) -> dict[str, Any]:
        """Everything held about the person of `email` in the stores of `scope`, audited (by
        hash, in each store's chain) before it is shown."""
        address = _canonical(email)
        address_hash = self._subjects.keys.address_hash(address)
        aliases = [a for a in await self._aliases.of_person(address) if scope.allows(a.store_id)]
        for store in _audited_stores(scope, aliases):
            await self._audit.record(
                EXPORTED, operator=operator, store=store, reason=reason, subject=address_hash
            )
        orders = _customer_orders(aliases)
        subjects = await self._subjects.keys.of_address(address) if scope.platform else []
        return {
            "exportedAt": self._clock.now().isoformat(),
            "email": address,
            "subjects": [_subject(s) for s in subjects],
            "aliases": [_alias(a) for a in aliases],
            "orders": [await self._order(order_id, scope) for order_id in orders],
            "messages": await self._kept_messages(orders),
            "suppressions": await self._suppressed(orders),
        }

    async def erase(self, email: str, *, reason: str, operator: str) -> Erasure:
        address = _canonical(email)
        keys = self._subjects.keys
        address_hash = keys.address_hash(address)
        aliases = [a for a in await self._aliases.of_person(address) if not a.erased]
        orders = _customer_orders(await self._aliases.of_person(address))
        lifted = 0
        for order_id, store_id in orders.items():
            lifted += len(await self._suppression.lift(order_id, store_id))
        deleted = await self._messages.delete_orders(orders)
        erased = 0
        for subject in await keys.of_address(address):
            erased += await keys.erase(subject.subject_id)
        await self._aliases.erase_person(address)
        erasure = Erasure(address_hash, erased, len(aliases), len(orders), deleted, lifted)
        await self._audit.record(
            ERASED, operator=operator, store=None, reason=reason, subject=address_hash,
            outcome="already erased" if erasure.already else "erased", keys=erased,
            aliases=len(aliases), orders=len(orders), messages=deleted,
        )  # fmt: skip
        return erasure

    async def _order(self, order_id: str, scope: Scope) -> dict[str, Any]:
        summary = await OrderQueries(self._db).summary(order_id, scope)
        entries = await get_timeline(self._db, order_id, self._subjects) or []
        return {
            "orderId": order_id,
            "storeId": summary.store_id if summary else None,
            "status": summary.status if summary else None,
            "timeline": [e.model_dump(by_alias=True, mode="json") for e in entries],
        }

    async def _kept_messages(self, orders: dict[str, str]) -> list[dict[str, Any]]:
        found = []
        for kept in await self._messages.of_orders(orders):
            raw = await self._messages.open(kept.event_id, kept.order_id)
            if raw is None:
                continue
            view = view_message(raw, lambda index: f"attachment {index}")
            found.append({
                "eventId": kept.event_id,
                "orderId": kept.order_id,
                "keptAt": kept.kept_at.isoformat(),
                "headers": {"subject": view.subject, "from": view.sender, "to": view.to,
                            "cc": view.cc, "date": view.date},
                "text": view.text,
                "attachments": [
                    {"filename": a.filename, "contentType": a.content_type,
                     "sizeBytes": a.size_bytes}
                    for a in view.attachments
                ],
            })  # fmt: skip
        return sorted(found, key=lambda m: (m["orderId"], m["keptAt"]))

    async def _suppressed(self, orders: dict[str, str]) -> list[dict[str, Any]]:
        found = []
        for order_id, store_id in orders.items():
            active = await self._suppression.for_operators(order_id, store_id)
            found += [
                {"scope": s.scope, "orderId": s.order_id, "storeId": s.store_id,
                 "status": s.status, "since": s.since.isoformat()}
                for s in active
            ]  # fmt: skip
        return found


def _subject(record: SubjectRecord) -> dict[str, Any]:
    return {
        "subjectId": record.subject_id,
        "createdAt": record.created_at.isoformat(),
        "erasedAt": record.erased_at.isoformat() if record.erased_at else None,
    }


def _canonical(email: str) -> str:
    """The address as aliases and keys were made from it; a string no alias could have been
    made from is looked up as it is, and finds nothing."""
    try:
        return normalize_address(email)
    except InvalidAddress:
        return email.strip().lower()


def _audited_stores(scope: Scope, aliases: list[AliasRecord]) -> list[str | None]:
    """Which audit chains an export goes into: the platform's for a platform operator, else each
    of the principal's stores it read from (the first of its stores when it found nothing)."""
    chains: list[str | None] = [None]
    if scope.stores is not None:
        found = sorted({a.store_id for a in aliases}) or sorted(scope.stores)[:1]
        chains = [*found] if found else [None]
    return chains


def _customer_orders(aliases: list[AliasRecord]) -> dict[str, str]:
    """order id -> store id of the orders where the person is the customer."""
    return {a.order_id: a.store_id for a in aliases if a.role is ParticipantRole.CUSTOMER}


def _alias(record: AliasRecord) -> dict[str, Any]:
    return {
        "alias": record.address,
        "orderId": record.order_id,
        "storeId": record.store_id,
        "role": record.role.value,
        "mask": record.mask.value,
        "name": record.name,
        "createdAt": _iso(record.created_at),
        "expiresAt": _iso(record.expires_at),
        "erased": record.erased,
    }


def _iso(value: datetime) -> str:
    return value.isoformat()
