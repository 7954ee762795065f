"""`ct alias resolve`, `ct alias unsuppress`: an alias's order, role and suppression."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from worker.cli._common import database, out, stores
from worker.cli.usage import UsageError
from worker.core.config import Settings

if TYPE_CHECKING:
    from worker.adapters.alias_store import AliasRecord
    from worker.apps.builder import Stores


def register(sub: Any) -> None:
    alias = sub.add_parser("alias", help="aliases")
    alias_sub = alias.add_subparsers(dest="action", required=True)
    resolve = alias_sub.add_parser(
        "resolve", help="which order and role an alias belongs to (audited)"
    )
    resolve.add_argument("alias")
    resolve.add_argument("--reason", required=True, help="why you look: written to the audit log")
    resolve.add_argument("--reveal", action="store_true", help="also print the real address")
    resolve.add_argument("--operator", help="who asks (default: $USER)")
    resolve.set_defaults(handler=cmd_resolve)
    unsuppress = alias_sub.add_parser(
        "unsuppress",
        help="email an order's customer again after a hard bounce suppressed them (audited)",
    )
    unsuppress.add_argument("alias", help="any alias of the order")
    unsuppress.add_argument("--reason", required=True, help="why: written to the audit log")
    unsuppress.add_argument("--operator", help="who lifts it (default: $USER)")
    unsuppress.set_defaults(handler=cmd_unsuppress)


async def cmd_resolve(args: argparse.Namespace, settings: Settings) -> int:
    import getpass

    from worker.domain.aliases import SystemClock
    from worker.services.admin import resolve_alias

    if not args.reason.strip():
        raise UsageError("ct alias resolve: --reason must say why you look (it is audited)")
    async with database(settings) as (db, dialect):
        kept = stores(settings, db, dialect)
        record = await resolve_alias(
            kept.aliases, kept.audit, args.alias, reason=args.reason,
            reveal=args.reveal, operator=args.operator or getpass.getuser(),
        )  # fmt: skip
        delivery = await delivery_state(kept, record) if record else ""
    if record is None:
        print(
            f"ct alias resolve: no alias {args.alias!r} (the lookup was audited)", file=sys.stderr
        )
        return 1
    now = SystemClock().now()
    state = "EXPIRED" if record.expired(now) else "active"
    out(f"alias:    {record.address}")
    out(f"order:    {record.order_id} (store {record.store_id})")
    out(f"role:     {record.role.value}  mask: {record.mask.value}  name: {record.name or '-'}")
    out(f"valid:    {record.created_at:%Y-%m-%d} .. {record.expires_at:%Y-%m-%d} ({state})")
    out(f"delivery: {delivery}")
    if args.reveal:
        operator = args.operator or getpass.getuser()
        out(f"address:  {record.real_address}   (revealed to {operator}; audited)")
    return 0


async def delivery_state(kept: Stores, record: AliasRecord) -> str:
    """One line for `ct alias resolve`: whether the order's customer is suppressed, and why."""
    suppression = kept.suppression
    found = await suppression.for_operators(record.order_id, record.store_id)
    if not found:
        return "the customer is emailed (no hard bounce)"
    first = min(found, key=lambda s: s.since)
    scopes = " and ".join(
        "this order"
        if s.scope == "order"
        else f"every order of store {s.store_id}"
        + ("" if suppression.store_wide else " (CT_BOUNCE_SUPPRESS_STORE is off)")
        for s in found
    )
    return (
        f"SUPPRESSED for {scopes}: the customer's address bounced hard ({first.status}) on "
        f"{first.since:%Y-%m-%d %H:%M} UTC; `ct alias unsuppress ALIAS --reason ...` lifts it"
    )


async def cmd_unsuppress(args: argparse.Namespace, settings: Settings) -> int:
    import getpass

    from worker.services.admin import unsuppress_alias

    if not args.reason.strip():
        raise UsageError("ct alias unsuppress: --reason must say why (it is audited)")
    async with database(settings) as (db, dialect):
        kept = stores(settings, db, dialect)
        found, lifted = await unsuppress_alias(
            kept.aliases, kept.audit, kept.suppression, args.alias,
            reason=args.reason, operator=args.operator or getpass.getuser(),
        )  # fmt: skip
    if not found:
        print(f"ct alias unsuppress: no alias {args.alias!r} (audited)", file=sys.stderr)
        return 1
    if not lifted:
        out("nothing to lift: the order's customer is not suppressed (audited)")
        return 0
    for suppression in lifted:
        scope = "order" if suppression.scope == "order" else f"store {suppression.store_id}"
        since = f"{suppression.since:%Y-%m-%d}"
        out(f"lifted the {scope} suppression ({suppression.status}, since {since})")
    return 0
