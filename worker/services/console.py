"""What the console and the API do, whoever asks through which: no HTTP in here.

Pages and API routes call these methods and render what they return. Anything that shows a real
address, a message's body or an attachment writes its audit record first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from worker.adapters.alias_store import AliasStore
from worker.adapters.audit import AuditEntry, AuditLog
from worker.adapters.dlq import DeadLetterQueue, ListedLetter
from worker.adapters.messages import KeptMessage, MessageStore
from worker.adapters.mongo import Database
from worker.adapters.order_queries import OrderQueries, OrderSummary
from worker.adapters.stores import StoreSetting, StoreSettings
from worker.domain.aliases import AliasExpiry, MaskType
from worker.domain.conversation import Conversation, MessageItem, conversation
from worker.domain.mime_view import AttachmentFile, MessageView, attachment_file, view_message
from worker.services.accounts import Principal
from worker.services.timeline import get_timeline


class Missing(LookupError):
    """What was asked for does not exist (or is not this order's); the message says what."""


class Invalid(ValueError):
    """A request that cannot be carried out as given; the message says what to change."""


@dataclass(frozen=True, slots=True)
class OrderPage:
    order: OrderSummary
    conversation: Conversation
    kept: dict[str, KeptMessage]
    revealed: dict[str, str]  # alias -> real address, only after an audited unmasking
    aliases_until: datetime | None = None  # when the order's aliases stop working


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
        domain: str,
    ) -> None:
        self._db = db
        self._aliases = aliases
        self._messages = messages
        self.audit = audit
        self._stores = stores
        self.orders = orders
        self._dlq = dead_letters
        self.domain = domain

    async def order_page(self, order_id: str) -> OrderPage:
        summary = await self.orders.summary(order_id)
        entries = await get_timeline(self._db, order_id)
        if summary is None or entries is None:
            raise Missing(f"no order {order_id!r}: check the id, or search by an alias")
        thread = conversation(entries, self.domain)
        kept = await self._messages.describe(m.event_id for m in thread.messages)
        until = min((r.expires_at for r in await self._aliases.of_order(order_id)), default=None)
        return OrderPage(summary, thread, kept, {}, until)

    async def unmask(self, page: OrderPage, principal: Principal, reason: str) -> OrderPage:
        """The page with the real addresses behind its aliases; audited before anything is read."""
        reason = " ".join(reason.split())
        if not reason:
            raise Invalid("say why you need the real addresses: the reason is written to audit")
        aliases = page.conversation.aliases()
        await self.audit.record(
            "conversation.unmask",
            operator=principal.operator,
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

    async def _raw(self, order_id: str, event_id: str) -> tuple[OrderPage, MessageItem, bytes]:
        page = await self.order_page(order_id)
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
        page, item, raw = await self._raw(order_id, event_id)
        await self.audit.record(
            "message.open", operator=principal.operator, orderId=order_id, message=event_id
        )
        return OpenedMessage(page.order, item, view_message(raw, attachment_url))

    async def message_bodies(self, page: OrderPage, principal: Principal) -> dict[str, MessageView]:
        """Every kept message of the page, opened: one audit record names them all."""
        if not page.kept:
            return {}
        await self.audit.record(
            "message.open",
            operator=principal.operator,
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
        _, _, raw = await self._raw(order_id, event_id)
        found = attachment_file(raw, index)
        if found is None:
            raise Missing(f"message {event_id!r} has no attachment number {index}")
        await self.audit.record(
            "attachment.open",
            operator=principal.operator,
            orderId=order_id,
            message=event_id,
            attachment=found.filename,
        )
        return found

    async def stores(self) -> list[StoreSetting]:
        """Stores with settings, and stores that only have orders yet (on the defaults)."""
        configured = {s.store_id: s for s in await self._stores.all()}
        for store_id in await self.orders.store_ids():
            configured.setdefault(store_id, await self._stores.get(store_id))
        return [configured[k] for k in sorted(configured)]

    async def store(self, store_id: str) -> StoreSetting:
        return await self._stores.get(store_id)

    async def update_store(
        self, store_id: str, mask: MaskType, expiry: AliasExpiry, principal: Principal
    ) -> StoreSetting:
        store_id = store_id.strip()
        if not store_id or len(store_id) > 256:
            raise Invalid("a store id is 1 to 256 characters")
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

    async def dead_letters(self, limit: int = 100) -> list[ListedLetter]:
        return await self._dlq.recent(limit)

    async def replay(self, offsets: set[int], principal: Principal) -> tuple[list[int], list[int]]:
        """Replay these dead letters; returns the offsets replayed and those not found."""
        if not offsets:
            raise Invalid("name at least one dead letter (its offset) to replay")
        await self.audit.record("dlq.replay", operator=principal.operator, offsets=sorted(offsets))
        done = sorted(
            letter.record.offset for letter in await self._dlq.replay(offsets, principal.operator)
        )
        return done, sorted(offsets - set(done))

    async def audit_page(
        self,
        *,
        action: str | None,
        operator: str | None,
        order_id: str | None,
        cursor: str | None,
        limit: int,
    ) -> tuple[list[AuditEntry], str | None]:
        return await self.audit.page(
            action=action, operator=operator, order_id=order_id, cursor=cursor, limit=limit
        )
