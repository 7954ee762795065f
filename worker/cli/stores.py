"""`ct store`: a store's mask type and alias expiry policy."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from worker.cli._common import database, out
from worker.core.config import Settings


def register(sub: Any) -> None:
    store = sub.add_parser("store", help="store settings")
    store_sub = store.add_subparsers(dest="action", required=True)
    set_mask = store_sub.add_parser("set-mask", help="choose hard or soft aliases for new orders")
    set_mask.add_argument("store_id")
    set_mask.add_argument("mask", choices=["hard", "soft"])
    set_mask.set_defaults(handler=cmd_set_mask)
    set_expiry = store_sub.add_parser(
        "set-expiry",
        help="fixed: aliases expire CT_ALIAS_TTL_DAYS after creation; orderFlow: "
        "CT_ALIAS_GRACE_DAYS after DELIVERED or CANCELED",
    )
    set_expiry.add_argument("store_id")
    set_expiry.add_argument("expiry", choices=["fixed", "orderFlow"])
    set_expiry.set_defaults(handler=cmd_set_expiry)
    show = store_sub.add_parser("show", help="print a store's settings")
    show.add_argument("store_id")
    show.set_defaults(handler=cmd_show)
    listing = store_sub.add_parser("list", help="print every store that has settings")
    listing.set_defaults(handler=cmd_list)


async def cmd_set_mask(args: argparse.Namespace, settings: Settings) -> int:
    from worker.adapters.stores import StoreSettings
    from worker.domain.aliases import SOFT_MASK_WARNING, MaskType

    async with database(settings) as (db, _):
        setting = await StoreSettings(db).set_mask(args.store_id, MaskType(args.mask))
    out(f"store {setting.store_id}: mask {setting.mask.value} for orders whose aliases are new")
    if setting.mask is MaskType.SOFT:
        print(f"warning: {SOFT_MASK_WARNING}", file=sys.stderr)
    return 0


async def cmd_set_expiry(args: argparse.Namespace, settings: Settings) -> int:
    from worker.adapters.stores import StoreSettings
    from worker.domain.aliases import AliasExpiry

    async with database(settings) as (db, _):
        setting = await StoreSettings(db).update(
            args.store_id, alias_expiry=AliasExpiry(args.expiry)
        )
    out(f"store {setting.store_id}: alias expiry {setting.alias_expiry.value}")
    return 0


async def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    from worker.adapters.stores import StoreSettings

    async with database(settings) as (db, _):
        setting = await StoreSettings(db).get(args.store_id)
    changed = setting.updated_at.isoformat() if setting.updated_at else "never (default)"
    out(
        f"store {setting.store_id}\n  mask: {setting.mask.value}\n"
        f"  alias expiry: {setting.alias_expiry.value}\n  changed: {changed}"
    )
    return 0


async def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    from worker.adapters.stores import StoreSettings

    async with database(settings) as (db, _):
        stores = await StoreSettings(db).all()
    for setting in stores:
        out(f"{setting.store_id:<24} {setting.mask.value:<5} {setting.alias_expiry.value}")
    if not stores:
        out("no store has settings yet: every store is hard-masked with fixed expiry")
    return 0
