"""Operator actions that look behind the masks: every one is audited before it shows anything."""

from __future__ import annotations

from worker.adapters.alias_store import AliasRecord, AliasStore
from worker.adapters.audit import AuditLog
from worker.adapters.suppressions import Suppression
from worker.services.suppression import CustomerSuppression


async def resolve_alias(
    aliases: AliasStore, audit: AuditLog, alias: str, *, reason: str, operator: str, reveal: bool
) -> AliasRecord | None:
    """Look an alias up; every lookup is audited, and written before anything is revealed."""
    record = await aliases.lookup(alias)
    await audit.record(
        "alias.reveal" if reveal else "alias.resolve",
        operator=operator,
        store=record.store_id if record else None,
        reason=reason,
        alias=aliases.audit_name(alias),
        found=record is not None,
        orderId=record.order_id if record else None,
    )
    return record


async def unsuppress_alias(
    aliases: AliasStore,
    audit: AuditLog,
    suppression: CustomerSuppression,
    alias: str,
    *,
    reason: str,
    operator: str,
) -> tuple[bool, list[Suppression]]:
    """Lift the hard-bounce suppression of the order `alias` belongs to (its customer), audited
    before anything changes. Returns whether the alias exists and what was lifted."""
    record = await aliases.lookup(alias)
    await audit.record(
        "alias.unsuppress",
        operator=operator,
        store=record.store_id if record else None,
        reason=reason,
        alias=aliases.audit_name(alias),
        found=record is not None,
        orderId=record.order_id if record else None,
    )
    if record is None:
        return False, []
    return True, await suppression.lift(record.order_id, record.store_id)
