"""What the console and the API do, whoever asks through which: no HTTP in here.

Pages and API routes call these methods and render what they return. Anything that shows a real
address, a message's body or an attachment writes its audit record first, naming its store.

Every method takes the principal and reads within its scope: an order, message, store or dead
letter of another store is not found, with the same error as one that does not exist, found
by the same queries (the scope is part of each query, so no time is spent on what is refused).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cachetools import TTLCache

from worker.adapters.alias_store import AliasStore
from worker.adapters.audit import AuditEntry, AuditLog
from worker.adapters.dlq import DeadLetterQueue, ListedLetter
from worker.adapters.messages import KeptMessage, MessageStore
from worker.adapters.mongo import Database
from worker.adapters.order_queries import OrderQueries, OrderSummary
from worker.adapters.stores import StoreSetting, StoreSettings
from worker.adapters.suppressions import Suppression
from worker.domain.aliases import AliasExpiry, MaskType
from worker.domain.audit_chain import ChainReport
from worker.domain.conversation import Conversation, MessageItem, conversation
from worker.domain.mime_view import AttachmentFile, MessageView, attachment_file, view_message
from worker.services.accounts import Principal
from worker.services.subject_requests import Erasure, SubjectRequests
from worker.services.subjects import Subjects
from worker.services.suppression import CustomerSuppression
from worker.services.timeline import get_timeline

VERIFIED_FOR_S = 60.0


class Missing(LookupError):
    """What was asked for does not exist (or is not this order's); the message says what."""


class Refused(PermissionError):
    """The principal may not do this, whatever it names (the message says who may)."""


class Invalid(ValueError):
    """A request that cannot be carried out as given; the message says what to change."""


@dataclass(frozen=True, slots=True)
class OrderPage:
    order: OrderSummary
    conversation: Conversation
    kept: dict[str, KeptMessage]
    revealed: dict[str, str]  # alias -> real address, only after an audited unmasking
    aliases_until: datetime | None = None  # when the order's aliases stop working
    # Why the order's customer is not emailed (the earliest suppression), if they are not.
    suppressed: Suppression | None = None


@dataclass(frozen=True, slots=True)
class OpenedMessage:
    order: OrderSummary
    item: MessageItem
    view: MessageView


class Console:
    def __init__(
        self,
        *,
        db: Database,
        aliases: AliasStore,
        messages: MessageStore,
        audit: AuditLog,
        stores: StoreSettings,
        orders: OrderQueries,
        dead_letters: DeadLetterQueue,
        suppression: CustomerSuppression,
        domain: str,
        subject_requests: SubjectRequests | None = None,
    ) -> None:
        self._subject_requests = subject_requests
        self._db = db
        self._aliases = aliases
        self._messages = messages
        self.audit = audit
        self._stores = stores
        self.orders = orders
        self._dlq = dead_letters
        self._suppression = suppression
        self.domain = domain
        self._verified: TTLCache[str, ChainReport] = TTLCache(maxsize=100_000, ttl=VERIFIED_FOR_S)

    async def order_page(self, order_id: str, principal: Principal) -> OrderPage:
        summary = await self.orders.summary(order_id, principal.scope)
        keys = self._messages.subject_keys
        subjects = Subjects(keys, self._aliases) if keys is not None else None
        entries = await get_timeline(self._db, order_id, subjects) if summary else None
        if summary is None or entries is None:
            raise Missing(f"no order {order_id!r}: check the id, or search by an alias")
        thread = conversation(entries, self.domain)
        kept = await self._messages.describe(m.event_id for m in thread.messages)
        until = min((r.expires_at for r in await self._aliases.of_order(order_id)), default=None)
        found = await self._suppression.for_operators(order_id, summary.store_id)
        suppressed = min(found, key=lambda s: s.since) if found else None
        return OrderPage(summary, thread, kept, {}, until, suppressed)

    async def unmask(self, page: OrderPage, principal: Principal, reason: str) -> OrderPage:
        """The page with the real addresses behind its aliases; audited before anything is read."""
        reason = " ".join(reason.split())
        if not reason:
            raise Invalid("say why you need the real addresses: the reason is written to audit")
        aliases = page.conversation.aliases()
        await self.audit.record(
            "conversation.unmask",
            operator=principal.operator,
            store=page.order.store_id,
            reason=reason,
            orderId=page.order.order_id,
            aliases=len(aliases),
        )
        revealed = {}
        for alias in aliases:
            record = await self._aliases.lookup(alias)
            # Only this order's aliases: a thread cannot be used to unmask another order.
            if record is not None and record.order_id == page.order.order_id:
                revealed[alias] = record.real_address
        return dataclasses.replace(page, revealed=revealed)

    async def _raw(
        self, order_id: str, event_id: str, principal: Principal
    ) -> tuple[OrderPage, MessageItem, bytes]:
        page = await self.order_page(order_id, principal)
        item = next((m for m in page.conversation.messages if m.event_id == event_id), None)
        if item is None:
            raise Missing(f"order {order_id!r} has no message {event_id!r}")
        raw = await self._messages.open(event_id, order_id)
        if raw is None:
            raise Missing(
                "this message's text is not kept: messages are deleted after the retention "
                "period, and those from before the message store have only their summary"
            )
        return page, item, raw

    async def open_message(
        self,
        order_id: str,
        event_id: str,
        principal: Principal,
        attachment_url: Callable[[int], str],
    ) -> OpenedMessage:
        page, item, raw = await self._raw(order_id, event_id, principal)
        await self.audit.record(
            "message.open",
            operator=principal.operator,
            store=page.order.store_id,
            orderId=order_id,
            message=event_id,
        )
        return OpenedMessage(page.order, item, view_message(raw, attachment_url))

    async def message_bodies(self, page: OrderPage, principal: Principal) -> dict[str, MessageView]:
        """Every kept message of the page, opened: one audit record names them all."""
        if not page.kept:
            return {}
        await self.audit.record(
            "message.open",
            operator=principal.operator,
            store=page.order.store_id,
            orderId=page.order.order_id,
            messages=sorted(page.kept),
        )
        views = {}
        for event_id in page.kept:
            raw = await self._messages.open(event_id, page.order.order_id)
            if raw is not None:
                views[event_id] = view_message(raw, lambda _index: "")
        return views

    async def open_attachment(
        self, order_id: str, event_id: str, index: int, principal: Principal
    ) -> AttachmentFile:
        page, _, raw = await self._raw(order_id, event_id, principal)
        found = attachment_file(raw, index)
        if found is None:
            raise Missing(f"message {event_id!r} has no attachment number {index}")
        await self.audit.record(
            "attachment.open",
            operator=principal.operator,
            store=page.order.store_id,
            orderId=order_id,
            message=event_id,
            attachment=found.filename,
        )
        return found

    async def stores(self, principal: Principal) -> list[StoreSetting]:
        """Stores with settings, and stores that only have orders yet (on the defaults); a
        scoped principal's own stores."""
        if principal.scope.stores is not None:
            return [await self._stores.get(s) for s in sorted(principal.scope.stores)]
        configured = {s.store_id: s for s in await self._stores.all()}
        for store_id in await self.orders.store_ids(principal.scope):
            configured.setdefault(store_id, await self._stores.get(store_id))
        return [configured[k] for k in sorted(configured)]

    def _own_store(self, store_id: str, principal: Principal) -> str:
        store_id = store_id.strip()
        if not store_id or len(store_id) > 256:
            raise Invalid("a store id is 1 to 256 characters")
        if not principal.scope.allows(store_id):
            raise Missing(f"no store {store_id!r}: check the id")
        return store_id

    async def store(self, store_id: str, principal: Principal) -> StoreSetting:
        return await self._stores.get(self._own_store(store_id, principal))

    async def update_store(
        self, store_id: str, mask: MaskType, expiry: AliasExpiry, principal: Principal
    ) -> StoreSetting:
        store_id = self._own_store(store_id, principal)
        before = await self._stores.get(store_id)
        await self.audit.record(
            "store.settings",
            operator=principal.operator,
            store=store_id,
            maskType=mask.value,
            aliasExpiry=expiry.value,
            previous={"maskType": before.mask.value, "aliasExpiry": before.alias_expiry.value},
        )
        return await self._stores.update(
            store_id, mask=mask, alias_expiry=expiry, by=principal.operator
        )

    async def dead_letters(self, principal: Principal, limit: int = 100) -> list[ListedLetter]:
        return await self._dlq.recent(principal.scope, limit)

    async def replay(self, offsets: set[int], principal: Principal) -> tuple[list[int], list[int]]:
        """Replay these dead letters; returns the offsets replayed and those not found (another
        store's are among those: not found, as for an offset that does not exist)."""
        if not offsets:
            raise Invalid("name at least one dead letter (its offset) to replay")
        found = await self._dlq.replayable(offsets, principal.scope)
        by_store: dict[str | None, list[int]] = {}
        for letter, store_id in found:
            by_store.setdefault(store_id, []).append(letter.record.offset)
        for store_id, store_offsets in sorted(by_store.items(), key=lambda kv: kv[0] or ""):
            await self.audit.record(
                "dlq.replay",
                operator=principal.operator,
                store=store_id,
                offsets=sorted(store_offsets),
            )
        replayed = await self._dlq.replay([letter for letter, _ in found], principal.operator)
        done = sorted(letter.record.offset for letter in replayed)
        return done, sorted(offsets - set(done))

    async def audit_page(
        self,
        principal: Principal,
        *,
        action: str | None,
        operator: str | None,
        order_id: str | None,
        cursor: str | None,
        limit: int,
    ) -> tuple[list[AuditEntry], str | None]:
        return await self.audit.page(
            scope=principal.scope,
            action=action,
            operator=operator,
            order_id=order_id,
            cursor=cursor,
            limit=limit,
        )

    async def audit_chains(self, principal: Principal) -> list[ChainReport]:
        """Whether the audit chains of the principal's stores verify, entry by entry.

        A walk reads every entry of a chain, so each chain's report is kept for a minute: the
        Audit page stays fast however often it is opened, and shows an edit within a minute.
        `ct audit verify` always walks everything.
        """
        reports = []
        for chain in await self.audit.chains(principal.scope):
            report = self._verified.get(chain)
            if report is None:
                report = self._verified[chain] = await self.audit.verify_chain(chain)
            reports.append(report)
        return reports

    async def export_subject(self, email: str, reason: str, principal: Principal) -> dict[str, Any]:
        """Everything held about one customer (admin; audited by the export itself)."""
        return await self._subject_request().export(
            email, reason=reason, operator=principal.operator, scope=principal.scope
        )

    async def erase_subject(self, email: str, reason: str, principal: Principal) -> Erasure:
        """Erase one customer everywhere (a platform admin: it reaches every store; audited
        with the keyed hash only)."""
        if not principal.scope.platform:
            raise Refused("erasure reaches every store: it is for a platform admin")
        return await self._subject_request().erase(
            email, reason=reason, operator=principal.operator
        )

    def _subject_request(self) -> SubjectRequests:
        if self._subject_requests is None:
            raise Invalid("data-subject requests are not set up on this console")
        return self._subject_requests
