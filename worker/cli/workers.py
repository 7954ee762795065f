"""`ct run`, `ct sink`, `ct check`, `ct topics create`, `ct demo`: the processes and the stack."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

from worker.cli._common import out
from worker.cli.usage import UsageError
from worker.core.config import Settings


def register(sub: Any) -> None:
    run = sub.add_parser(
        "run", help="run workers until SIGTERM/SIGINT, side by side in one process"
    )
    run.add_argument(
        "worker",
        nargs="+",
        choices=["notifier", "relay", "projector", "web", "all"],
        help="web is the console and HTTP API on CT_WEB_HOST:CT_WEB_PORT; all is every one",
    )
    run.set_defaults(handler=cmd_run)

    sink = sub.add_parser(
        "sink", help="SMTP capture server: files every message as .eml + index.jsonl"
    )
    sink.add_argument("--host", default="127.0.0.1")
    sink.add_argument("--port", type=int, default=1025)
    sink.add_argument("--dir", type=Path, required=True, help="where captured messages are written")
    sink.set_defaults(handler=cmd_sink)

    check = sub.add_parser("check", help="wait until a server answers (exit 1 after --timeout)")
    check.add_argument("server", choices=["kafka", "mongo", "smtp"])
    check.add_argument("--timeout", type=float, default=30.0)
    check.add_argument("--host", help="SMTP host (smtp only; default: CT_SMTP_HOST)")
    check.add_argument(
        "--port", type=int, help="SMTP port (smtp only; default: CT_SMTP_PORT; TLS: CT_SMTP_TLS)"
    )
    check.set_defaults(handler=cmd_check)

    topics = sub.add_parser("topics", help="Kafka topics").add_subparsers(
        dest="action", required=True
    )
    create = topics.add_parser("create", help="create the project's topics (idempotent)")
    create.add_argument("--partitions", type=int, help="default: CT_TOPIC_PARTITIONS")
    create.add_argument("--replication", type=int, help="default: CT_TOPIC_REPLICATION")
    create.set_defaults(handler=cmd_topics_create)

    demo = sub.add_parser("demo", help="the scripted end-to-end story on the local stack")
    demo.add_argument("--orders", type=int, default=2, help="orders per store")
    demo.set_defaults(handler=cmd_demo)


async def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from worker.apps.runtime import run_services
    from worker.apps.workers import build_services

    return await run_services(settings, build_services(args.worker, settings))


async def cmd_sink(args: argparse.Namespace, settings: Settings) -> int:
    from worker.devtools.sink import serve_sink

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
    out(f"{args.server}: ok")
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
        out(f"{name}: {'created' if name in created else 'exists'}")
    return 0


async def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from worker.devtools.demo import run_demo

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
