"""`ct audit verify`: walk every store's audit hash chain and name the first broken link."""

from __future__ import annotations

import argparse
from typing import Any

from worker.cli._common import database, out
from worker.core.config import Settings


def register(sub: Any) -> None:
    audit = sub.add_parser("audit", help="the audit log")
    audit_sub = audit.add_subparsers(dest="action", required=True)
    audit_sub.add_parser(
        "verify", help="walk every store's audit chain; report its first broken link (exit 1)"
    ).set_defaults(handler=cmd_verify)


async def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    from worker.adapters.audit import AuditLog
    from worker.domain.scope import PLATFORM

    async with database(settings) as (db, _):
        reports = await AuditLog(db).verify(PLATFORM)
    for report in reports:
        if report.broken:
            broken = report.broken
            out(
                f"{report.chain}: BROKEN at entry {broken.seq} (id {broken.entry_id}): "
                f"{broken.reason}"
            )
        else:
            out(f"{report.chain}: ok, {report.entries} entries, head {report.head}")
    if not reports:
        out("the audit log is empty")
    return 1 if any(r.broken for r in reports) else 0
