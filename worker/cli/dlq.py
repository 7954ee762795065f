"""`ct dlq list`, `ct dlq replay`: dead letters and their reasons, re-published on request."""

from __future__ import annotations

import argparse
from typing import Any

from worker.cli._common import database, out, stores
from worker.cli.usage import UsageError
from worker.core.config import Settings


def register(sub: Any) -> None:
    dlq = sub.add_parser("dlq", help="dead letters")
    dlq_sub = dlq.add_subparsers(dest="action", required=True)
    dlq_list = dlq_sub.add_parser("list", help="print the dead letters with their reasons")
    dlq_list.add_argument("--limit", type=int, default=50)
    dlq_list.set_defaults(handler=cmd_list)
    replay = dlq_sub.add_parser("replay", help="re-publish dead letters to their original topics")
    replay.add_argument("--since", help="only records dead-lettered at or after this ISO time")
    replay.add_argument("--dry-run", action="store_true", help="list what would be replayed")
    replay.add_argument(
        "--group", default="ct-dlq-replay", help="consumer group that tracks replay progress"
    )
    replay.set_defaults(handler=cmd_replay)


async def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    from worker.adapters.dead_letters import dead_letters

    shown = 0
    async for letter in dead_letters(settings, group=None):
        if shown >= args.limit:
            break
        shown += 1
        at = letter.at.strftime("%Y-%m-%d %H:%M:%S") if letter.at else "?"
        origin = f"{letter.origin_topic}[{letter.origin_partition}]@{letter.origin_offset}"
        out(f"{letter.record.offset:>6}  {at}  {letter.component:<9}  {origin}  {letter.reason}")
    if not shown:
        out(f"{settings.topic_dlq} is empty")
    return 0


async def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import datetime

    from worker.adapters.dead_letters import replay_dead_letters

    try:
        since = datetime.fromisoformat(args.since) if args.since else None
    except ValueError:
        raise UsageError(
            f"ct dlq replay: --since {args.since!r} is not an ISO time, e.g. 2026-11-22T18:00"
        ) from None
    if since is not None and since.tzinfo is None:
        from datetime import UTC

        since = since.replace(tzinfo=UTC)
    from worker.contracts.codec import SingleObjectCodec
    from worker.services.subjects import DeadLetterSeal

    async with database(settings) as (db, dialect):
        keys = stores(settings, db, dialect).subject_keys
        letters = await replay_dead_letters(
            settings, group=args.group, since=since, dry_run=args.dry_run,
            open_value=DeadLetterSeal(SingleObjectCodec(), keys).open,
        )  # fmt: skip
    verb = "would replay" if args.dry_run else "replayed"
    for letter in letters:
        out(f"{verb} dlq offset {letter.record.offset} -> {letter.origin_topic} ({letter.reason})")
    out(f"{verb} {len(letters)} record(s)")
    return 0
