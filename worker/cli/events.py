"""`ct emit`, `ct preview`, `ct timeline`: order-status events in, an order's conversation out."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from worker.cli._common import database, out, stores
from worker.core.config import Settings

STATUSES = ["PAYMENT_APPROVED", "HANDLING", "INVOICED", "SHIPPED", "DELIVERED", "CANCELED"]


def register(sub: Any) -> None:
    emit = sub.add_parser("emit", help="produce one order-status event to Kafka")
    emit.add_argument("--order", required=True)
    emit.add_argument("--store", required=True, help="store id")
    emit.add_argument("--status", required=True, choices=STATUSES)
    emit.add_argument("--customer-email", required=True)
    emit.add_argument("--customer-name", default="Jane Doe", help="'First Last'")
    emit.add_argument("--customer-locale")
    emit.add_argument("--store-name", default="Example Store")
    emit.add_argument("--store-email", required=True)
    emit.add_argument("--store-locale")
    emit.add_argument("--event-id", help="default: a new UUID")
    emit.add_argument("--total", type=int, help="order total in cents")
    emit.add_argument("--currency", help="ISO 4217, e.g. BRL")
    emit.add_argument("--invoice-number")
    emit.add_argument("--invoice-url")
    emit.add_argument("--carrier")
    emit.add_argument("--tracking-code")
    emit.add_argument("--tracking-url")
    emit.add_argument(
        "--item", action="append", default=[], metavar="QTYxNAME", help="e.g. 2xSocks"
    )

    emit.set_defaults(handler=cmd_emit)

    preview = sub.add_parser(
        "preview", help="render a notification email to a file and print its path"
    )
    preview.add_argument("status", choices=STATUSES)
    preview.add_argument("--locale", default="en")
    preview.add_argument("--store", default="demo-store", help="store id (for template overrides)")
    preview.add_argument("--out", type=Path, help="output file (default: a temporary .eml)")
    preview.set_defaults(handler=cmd_preview)

    timeline = sub.add_parser("timeline", help="print an order's conversation from MongoDB")
    timeline.add_argument("order_id")
    timeline.add_argument("--json", action="store_true", help="the timeline as JSON")
    timeline.set_defaults(handler=cmd_timeline)


async def cmd_emit(args: argparse.Namespace, settings: Settings) -> int:
    from worker.adapters.kafka import make_producer
    from worker.contracts.codec import SingleObjectCodec
    from worker.devtools.emit import event_from_args

    event = event_from_args(args)
    producer = make_producer(settings, "ct-emit")
    try:
        await producer.start()
        await producer.send_and_wait(
            settings.topic_order_status,
            key=event.order_id.encode(),
            value=SingleObjectCodec().encode(event),
        )
    finally:
        await producer.stop()
    out(f"emitted {event.status.value} for order {event.order_id} (event {event.event_id})")
    return 0


async def cmd_preview(args: argparse.Namespace, settings: Settings) -> int:
    import tempfile
    from pathlib import Path

    from worker.devtools.emit import sample_event
    from worker.domain.compose import compose_notification
    from worker.domain.templates import TemplateRenderer

    event = sample_event(args.status, args.locale, args.store)
    rendered = TemplateRenderer(settings.templates_dir).render(event)
    composed = compose_notification(
        rendered,
        event=event,
        store_alias=f"{'0' * 32}@{settings.domain}",
        customer_alias=f"{'1' * 32}@{settings.domain}",
        domain=settings.domain,
    )
    path: Path = args.out or Path(
        tempfile.mkstemp(prefix=f"ct-{args.status.lower()}-{rendered.locale}-", suffix=".eml")[1]
    )
    await asyncio.to_thread(path.write_bytes, composed.raw)
    out(str(path))
    return 0


async def cmd_timeline(args: argparse.Namespace, settings: Settings) -> int:
    from worker.services.timeline import format_table, get_timeline, timeline_json

    async with database(settings) as (db, dialect):
        entries = await get_timeline(db, args.order_id, stores(settings, db, dialect).subjects)
    if entries is None:
        print(
            f"ct timeline: no order {args.order_id!r} in {settings.mongo_db}.orders",
            file=sys.stderr,
        )
        return 1
    out(timeline_json(entries) if args.json else format_table(args.order_id, entries))
    return 0
