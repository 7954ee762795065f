"""Suppression, the one owner: a customer whose address bounced hard is not emailed again.

The rule: a hard failure (a DSN's 5.x.x, or the upstream's permanent "no such user" during the
SMTP transaction) of mail to an order's customer suppresses that customer's address for the
order, and with CT_BOUNCE_SUPPRESS_STORE for every order of the store. The notifier asks
`in_force_for_orders` (a poll's orders at once) before it sends and records `not_sent_report`
instead of sending; it and the bounce intake report failures to `after_failure`; `ct alias
resolve`/`unsuppress` read and lift suppressions through `for_operators` and `lift`. Records hold
the keyed hash of the address, never the address (adapters/suppressions.py stores them).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from worker.adapters.suppressions import Suppression
from worker.contracts.events import DeliveryReport, FailureType, ParticipantRole, ReportSource
from worker.core import metrics
from worker.services.ports import Aliases, SuppressionRecords

UNKNOWN_STATUS = "5.0.0"  # a hard failure that named no status code


class CustomerSuppression:
    def __init__(self, records: SuppressionRecords, aliases: Aliases, *, store_wide: bool) -> None:
        self._records = records
        self._aliases = aliases
        self.store_wide = store_wide

    async def in_force(
        self, order_id: str, store_id: str, customer_address: str
    ) -> Suppression | None:
        """The earliest suppression in force for this order's customer, if any."""
        found = await self._records.active(
            order_id, store_id, self._aliases.address_hash(customer_address)
        )
        return min(found, key=lambda s: s.since) if found else None

    async def in_force_for_orders(
        self, customers: Mapping[str, tuple[str, str]]
    ) -> dict[str, Suppression | None]:
        """`in_force` for many orders at once, {order id: (store id, customer address)}: the
        notifier's one suppression read per poll."""
        orders = list(customers)
        found = await self._records.active_many(
            [
                (order_id, store_id, self._aliases.address_hash(address))
                for order_id, (store_id, address) in customers.items()
            ]
        )
        return {
            order_id: min(each, key=lambda s: s.since) if each else None
            for order_id, each in zip(orders, found, strict=True)
        }

    @staticmethod
    def not_sent_report(suppression: Suppression) -> DeliveryReport:
        """The DELIVERY_FAILED report of a notification not sent because of `suppression`."""
        metrics.NOTIFICATIONS_SUPPRESSED.inc()
        return DeliveryReport(
            failure_type=FailureType.SUPPRESSED,
            source=ReportSource.SUPPRESSION,
            status=suppression.status,
            diagnostic=(
                f"not sent: the customer's address bounced hard ({suppression.status}) on "
                f"{suppression.since:%Y-%m-%d}; `ct alias unsuppress` lifts it"
            ),
        )

    async def after_failure(
        self,
        report: DeliveryReport,
        *,
        to: ParticipantRole,
        order_id: str,
        store_id: str,
        address: str,
        cause_event_id: str,
        at: datetime,
    ) -> Suppression | None:
        """Apply the rule to a failed delivery to `address`; returns the suppression it started
        (None: not a hard failure of mail to a customer). Idempotent: a second report of the
        same failure keeps the first one's record."""
        if report.failure_type is not FailureType.HARD_BOUNCE or to is not ParticipantRole.CUSTOMER:
            return None
        if not address:
            return None  # the customer's alias is gone: there is no address to suppress
        status = report.status or UNKNOWN_STATUS
        await self._records.suppress(
            order_id=order_id,
            store_id=store_id,
            address_hash=self._aliases.address_hash(address),
            status=status,
            cause_event_id=cause_event_id,
            at=at,
        )
        return Suppression("order", order_id, store_id, status, cause_event_id, at)

    async def for_operators(self, order_id: str, store_id: str) -> list[Suppression]:
        """Every suppression of the order's customer, store-wide ones whatever the setting."""
        address_hash = await self._customer_hash(order_id)
        if address_hash is None:
            return []
        return await self._records.active(order_id, store_id, address_hash, every=True)

    async def lift(self, order_id: str, store_id: str) -> list[Suppression]:
        """Email the order's customer again: both scopes removed; returns what was lifted."""
        address_hash = await self._customer_hash(order_id)
        if address_hash is None:
            return []
        return await self._records.lift(order_id, store_id, address_hash)

    async def _customer_hash(self, order_id: str) -> str | None:
        customer = next(
            (
                r
                for r in await self._aliases.of_order(order_id)
                if r.role is ParticipantRole.CUSTOMER
            ),
            None,
        )
        return self._aliases.address_hash(customer.real_address) if customer is not None else None
