"""The `ct` subcommands: each takes the parsed arguments and the settings, returns an exit code."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from worker.config import Settings
from worker.usage import UsageError

if TYPE_CHECKING:
    from worker.adapters.alias_store import AliasStore
    from worker.adapters.dialect import Dialect
    from worker.adapters.mongo import Database


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


async def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from worker.apps.runtime import run_services
    from worker.apps.services import build_services

    return await run_services(settings, build_services(args.worker, settings))


async def cmd_sink(args: argparse.Namespace, settings: Settings) -> int:
    from worker.apps.sink import serve_sink

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await serve_sink(args.host, args.port, args.dir, stopping)
    return 0


async def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    from worker.apps import checks

    host = args.host or settings.smtp_host
    port = args.port or settings.smtp_port
    upstream = settings.model_copy(update={"smtp_host": host, "smtp_port": port})
    probes = {
        "kafka": lambda: checks.kafka_answers(settings),
        "mongo": lambda: checks.mongo_answers(settings),
        "smtp": lambda: checks.smtp_upstream_answers(upstream),
    }
    try:
        await checks.wait_until(probes[args.server], args.timeout)
    except TimeoutError as exc:
        print(f"ct check {args.server}: {exc}", file=sys.stderr)
        return 1
    _out(f"{args.server}: ok")
    return 0


async def cmd_topics_create(args: argparse.Namespace, settings: Settings) -> int:
    from worker.adapters.kafka import ensure_topics

    partitions = args.partitions or settings.topic_partitions
    replication = args.replication or settings.topic_replication
    if partitions < 1 or replication < 1:
        print(
            "ct topics create: --partitions and --replication must be at least 1", file=sys.stderr
        )
        return 2
    created = await ensure_topics(settings, partitions, replication)
    for name in (settings.topic_order_status, settings.topic_timeline, settings.topic_dlq):
        _out(f"{name}: {'created' if name in created else 'exists'}")
    return 0


async def cmd_timeline(args: argparse.Namespace, settings: Settings) -> int:
    from worker.timeline import format_table, get_timeline, timeline_json

    async with _database(settings) as (db, _):
        entries = await get_timeline(db, args.order_id)
    if entries is None:
        print(
            f"ct timeline: no order {args.order_id!r} in {settings.mongo_db}.orders",
            file=sys.stderr,
        )
        return 1
    _out(timeline_json(entries) if args.json else format_table(args.order_id, entries))
    return 0


async def cmd_keygen(args: argparse.Namespace, settings: Settings) -> int:
    from worker.crypto import generate_key

    _out(generate_key())
    return 0


async def cmd_emit(args: argparse.Namespace, settings: Settings) -> int:
    from worker.adapters.kafka import make_producer
    from worker.codec import SingleObjectCodec
    from worker.emit import event_from_args

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
    _out(f"emitted {event.status.value} for order {event.order_id} (event {event.event_id})")
    return 0


async def cmd_preview(args: argparse.Namespace, settings: Settings) -> int:
    import tempfile
    from pathlib import Path

    from worker.domain.compose import compose_notification
    from worker.domain.templates import TemplateRenderer
    from worker.emit import sample_event

    event = sample_event(args.status, args.locale, args.store)
    rendered = TemplateRenderer(settings.templates_dir).render(event)
    composed = compose_notification(
        rendered,
        event=event,
        store_alias=f"{'0' * 32}@{settings.domain}",
        customer_alias=f"{'1' * 32}@{settings.domain}",
        domain=settings.domain,
    )
    out: Path = args.out or Path(
        tempfile.mkstemp(prefix=f"ct-{args.status.lower()}-{rendered.locale}-", suffix=".eml")[1]
    )
    await asyncio.to_thread(out.write_bytes, composed.raw)
    _out(str(out))
    return 0


async def cmd_store_set_mask(args: argparse.Namespace, settings: Settings) -> int:
    from worker.adapters.stores import StoreSettings
    from worker.domain.aliases import MaskType

    async with _database(settings) as (db, _):
        setting = await StoreSettings(db).set_mask(args.store_id, MaskType(args.mask))
    _out(f"store {setting.store_id}: mask {setting.mask.value} for orders whose aliases are new")
    if setting.mask is MaskType.SOFT:
        print(
            "warning: soft aliases are reversible by design: the real address can be read off "
            "them (john@example.com-<token>.<domain>). Use hard aliases where that matters.",
            file=sys.stderr,
        )
    return 0


async def cmd_store_show(args: argparse.Namespace, settings: Settings) -> int:
    from worker.adapters.stores import StoreSettings

    async with _database(settings) as (db, _):
        setting = await StoreSettings(db).get(args.store_id)
    changed = setting.updated_at.isoformat() if setting.updated_at else "never (default)"
    _out(f"store {setting.store_id}\n  mask: {setting.mask.value}\n  changed: {changed}")
    return 0


@contextlib.asynccontextmanager
async def _database(settings: Settings) -> AsyncIterator[tuple[Database, Dialect]]:
    """The project's database and its server's dialect, for one command."""
    from worker.adapters import mongo
    from worker.adapters.dialect import detect_dialect

    client = mongo.connect(settings, app_name="ct-cli")
    try:
        db = client[settings.mongo_db]
        yield db, await detect_dialect(db, settings.mongo_dialect)
    finally:
        await client.close()


def _alias_store(settings: Settings, db: Database, dialect: Dialect) -> AliasStore:
    from worker.adapters.alias_store import AliasStore
    from worker.crypto import AddressCipher
    from worker.domain.aliases import SystemClock

    return AliasStore(
        db, AddressCipher(settings.data_keys()), domain=settings.domain,
        ttl_days=settings.alias_ttl_days, clock=SystemClock(), dialect=dialect,
    )  # fmt: skip


async def cmd_alias_resolve(args: argparse.Namespace, settings: Settings) -> int:
    import getpass

    from worker.adapters.audit import AuditLog
    from worker.admin import resolve_alias
    from worker.domain.aliases import SystemClock

    if not args.reason.strip():
        raise UsageError("ct alias resolve: --reason must say why you look (it is audited)")
    async with _database(settings) as (db, dialect):
        record = await resolve_alias(
            _alias_store(settings, db, dialect), AuditLog(db), args.alias, reason=args.reason,
            reveal=args.reveal, operator=args.operator or getpass.getuser(),
        )  # fmt: skip
    if record is None:
        print(
            f"ct alias resolve: no alias {args.alias!r} (the lookup was audited)", file=sys.stderr
        )
        return 1
    now = SystemClock().now()
    state = "EXPIRED" if record.expired(now) else "active"
    _out(f"alias:    {record.address}")
    _out(f"order:    {record.order_id} (store {record.store_id})")
    _out(f"role:     {record.role.value}  mask: {record.mask.value}  name: {record.name or '-'}")
    _out(f"valid:    {record.created_at:%Y-%m-%d} .. {record.expires_at:%Y-%m-%d} ({state})")
    if args.reveal:
        operator = args.operator or getpass.getuser()
        _out(f"address:  {record.real_address}   (revealed to {operator}; audited)")
    return 0


async def cmd_dlq_list(args: argparse.Namespace, settings: Settings) -> int:
    from worker.adapters.dead_letters import dead_letters

    shown = 0
    async for letter in dead_letters(settings, group=None):
        if shown >= args.limit:
            break
        shown += 1
        at = letter.at.strftime("%Y-%m-%d %H:%M:%S") if letter.at else "?"
        origin = f"{letter.origin_topic}[{letter.origin_partition}]@{letter.origin_offset}"
        _out(f"{letter.record.offset:>6}  {at}  {letter.component:<9}  {origin}  {letter.reason}")
    if not shown:
        _out(f"{settings.topic_dlq} is empty")
    return 0


async def cmd_dlq_replay(args: argparse.Namespace, settings: Settings) -> int:
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
    letters = await replay_dead_letters(
        settings, group=args.group, since=since, dry_run=args.dry_run
    )
    verb = "would replay" if args.dry_run else "replayed"
    for letter in letters:
        _out(f"{verb} dlq offset {letter.record.offset} -> {letter.origin_topic} ({letter.reason})")
    _out(f"{verb} {len(letters)} record(s)")
    return 0


async def cmd_keys_reencrypt(args: argparse.Namespace, settings: Settings) -> int:
    async with _database(settings) as (db, dialect):
        seen, rewritten = await _alias_store(settings, db, dialect).reencrypt_all()
    _out(f"{seen} aliases checked, {rewritten} re-encrypted under the current key")
    return 0


async def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from worker.apps.demo import run_demo

    if not 1 <= args.orders <= 50:
        raise UsageError("ct demo: --orders must be between 1 and 50")
    try:
        return await run_demo(settings, args.orders)
    except TimeoutError as exc:
        print(
            f"ct demo: {exc}; `deploy/local/stack status` and the logs it names say why",
            file=sys.stderr,
        )
        return 1
