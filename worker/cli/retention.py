"""`ct retention run`: delete what is past its retention, once (the notifiers run it daily)."""

from __future__ import annotations

import argparse
import getpass
from typing import Any

from worker.cli._common import database, out, stores
from worker.core.config import Settings


def register(sub: Any) -> None:
    retention = sub.add_parser("retention", help="what is kept, and for how long")
    retention_sub = retention.add_subparsers(dest="action", required=True)
    run = retention_sub.add_parser(
        "run",
        help="delete kept messages past CT_MESSAGE_RETENTION_DAYS and shred subjects past "
        "CT_SUBJECT_RETENTION_DAYS (audited)",
    )
    run.add_argument("--operator", help="who runs it (default: $USER)")
    run.set_defaults(handler=cmd_run)


async def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    async with database(settings) as (db, dialect):
        done = await stores(settings, db, dialect).retention.run(
            operator=args.operator or getpass.getuser()
        )
    days = done.subject_retention_days
    kept_days = settings.message_retention_days
    out(f"{done.messages_purged} kept message(s) past {kept_days} days deleted")
    out(
        f"{done.subjects_shredded} subject(s) shredded (every order older than {days} days)"
        if days is not None
        else "subjects: kept until erased (CT_SUBJECT_RETENTION_DAYS is not set)"
    )
    return 0
