"""Operator actions that look behind the masks: every one is audited before it shows anything."""

from __future__ import annotations

from worker.adapters.alias_store import AliasRecord, AliasStore
from worker.adapters.audit import AuditLog
from worker.adapters.suppressions import Suppression, Suppressions
from worker.contracts.events import ParticipantRole
from worker.core.crypto import AddressCipher


async def resolve_alias(
    aliases: AliasStore, audit: AuditLog, alias: str, *, reason: str, operator: str, reveal: bool
) -> AliasRecord | None:
    """Look an alias up; every lookup is audited, and written before anything is revealed."""
    record = await aliases.lookup(alias)
    await audit.record(
        "alias.reveal" if reveal else "alias.resolve",
        operator=operator,
        reason=reason,
        alias=alias.strip().lower(),
        found=record is not None,
        orderId=record.order_id if record else None,
    )
    return record


async def unsuppress_alias(
    aliases: AliasStore,
    audit: AuditLog,
    suppressions: Suppressions,
    cipher: AddressCipher,
    alias: str,
    *,
    reason: str,
    operator: str,
) -> tuple[bool, list[Suppression]]:
    """Lift the hard-bounce suppression of the order `alias` belongs to (its customer), audited
    before anything changes. Returns whether the alias exists and what was lifted."""
    record = await aliases.lookup(alias)
    customer = None
    if record is not None:
        customer = next(
            (
                r
                for r in await aliases.of_order(record.order_id)
                if r.role is ParticipantRole.CUSTOMER
            ),
            None,
        )
    await audit.record(
        "alias.unsuppress",
        operator=operator,
        reason=reason,
        alias=alias.strip().lower(),
        found=record is not None,
        orderId=record.order_id if record else None,
    )
    if record is None or customer is None:
        return record is not None, []
    lifted = await suppressions.lift(
        record.order_id, record.store_id, cipher.address_hash(customer.real_address)
    )
    return True, lifted
